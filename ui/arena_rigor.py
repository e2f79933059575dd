"""The Arena tab's rigor tools for admins: tie-aware and style-controlled ratings with provisional flags,
drop-k robustness and Figure 2; and the raters' quality table with exclusions that recompute ratings.

Plain handlers over `cai.evals.ratings` and `cai.arena.raters` (tests call them directly);
`build_rigor(ctx, campaign)` lays them out inside the admin accordion of `ui.arena.build`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from cai import arena
from cai.arena import raters as arena_raters
from cai.evals import ratings
from ui.common import EDIT_ROLES, AppContext, bind, require

RATING_COLUMNS = ["dimension", "model", "rating", "ci_low", "ci_high", "n", "provisional", "note"]
STYLE_COLUMNS = ["rating_raw", "rank", "rank_raw", "rank_change"]
RATER_COLUMNS = ["rater", "votes", "shared", "agree_majority", "gold", "gold_accuracy", "share_A",
                 "median_seconds", "excluded", "flags"]


def figure2_note(dimensions: Any) -> str:
    """What would fill Figure 2, shown instead of an empty plot frame (issue 28)."""
    have = [d for d in ("helpfulness", "harmlessness") if d in dimensions]
    missing = [d for d in ("helpfulness", "harmlessness") if d not in have]
    return ("Figure 2 (harmlessness vs helpfulness) appears once there are votes in both dimensions; "
            + ("no votes yet." if len(missing) == 2 else f"no {missing[0]} votes yet."))


def _campaign(name: str | None) -> str | None:
    return None if name in (None, "", "(all)") else name


def rigor_ratings(ctx: AppContext, campaign: str, method: str, rounds: float, style_control: bool,
                  provisional_below: float, request: gr.Request) -> tuple[pd.DataFrame, str, Any]:
    """Ratings per dimension (provisional below the threshold; with style control, raw ratings and rank
    changes), each dimension's drop-k, and Figure 2 when both dimensions have votes."""
    require(ctx, request, EDIT_ROLES)
    cols = RATING_COLUMNS + (STYLE_COLUMNS if style_control else [])
    df = arena.votes_frame(ctx.db(), campaign=_campaign(campaign))
    if df.empty:
        return pd.DataFrame(columns=cols), "No votes yet.", gr.Plot(None, visible=False)
    below = int(provisional_below or 0)
    try:
        by_dim = ratings.rate_by_dimension(df, method=method, rounds=int(rounds or 0), seed=0,
                                           style_control=style_control, provisional_below=below)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    votes = df.groupby("dimension").size()
    notes = []
    for dim, found in ratings.drop_k_by_dimension(df, "rk" if method == "rk" else "bt").items():
        if found.k is None:
            notes.append(f"**{dim}**: no removal order tried dethroned {found.top}.")
        else:
            notes.append(f"**{dim}**: removing **{found.k}** of {votes[dim]} votes puts {found.challenger} level "
                         f"with or above {found.top} ({found.method}; an upper bound on the fewest).")
    rows = [{"dimension": d, **r.to_dict()} for d, rs in by_dim.items() for r in rs]
    table = pd.DataFrame(rows, columns=cols).round(1)
    table["provisional"] = table["provisional"].map(lambda p: f"provisional (< {below} votes)" if p else "")
    fig = None
    if "helpfulness" in by_dim and "harmlessness" in by_dim:
        fig = ratings.figure2(by_dim["helpfulness"], by_dim["harmlessness"])
    if fig is None:
        notes.append(figure2_note(by_dim))
    return table, "  \n".join(["Drop-k robustness:", *notes]), gr.Plot(fig, visible=fig is not None)


def rater_view(ctx: AppContext, campaign: str, request: gr.Request) -> tuple[pd.DataFrame, str]:
    """Each rater's agreement, gold accuracy, flags and exclusion; Krippendorff's alpha; the thresholds."""
    require(ctx, request, EDIT_ROLES)
    report = arena_raters.rater_report(ctx.db(), _campaign(campaign))
    rows = [{**r, "flags": "; ".join(r["flags"])} for r in report["raters"]]
    a, t = report["agreement"], report["thresholds"]
    text = (f"Krippendorff's alpha (nominal) **{'—' if a['alpha'] is None else a['alpha']}** over {a['items']} "
            f"items judged by more than one rater (same seeded prompt, same two models, first turn). Flags: "
            f"always A at >= {t['always_A_share']:.0%} of >= {t['always_A_min_votes']} decisive votes; too fast "
            f"under {t['too_fast_seconds']:g} s median over >= {t['too_fast_min_votes']} votes.")
    return pd.DataFrame(rows, columns=RATER_COLUMNS), text


def set_exclusion(ctx: AppContext, campaign: str, rater: str, exclude: bool, reason: str,
                  request: gr.Request) -> str:
    """Exclude (or include again) a rater's votes in this campaign (all campaigns under "(all)")."""
    who = require(ctx, request, EDIT_ROLES)
    if not (rater or "").strip():
        raise gr.Error("Type the rater's name first.")
    scope = _campaign(campaign)
    try:
        if exclude:
            arena_raters.exclude_rater(ctx.db(), rater.strip(), scope, reason or "", by=who)
        else:
            arena_raters.include_rater(ctx.db(), rater.strip(), scope)
    except (arena.ArenaError, LookupError) as exc:
        raise gr.Error(str(exc)) from None
    where = f"campaign {scope!r}" if scope else "every campaign"
    verb = "left out of" if exclude else "counted again in"
    return f"{rater.strip()}'s votes are {verb} ratings ({where}); recompute the ratings to see the change."


def build_rigor(ctx: AppContext, campaign: gr.Dropdown) -> None:
    """Layout and wiring, inside the admin accordion; `campaign` is the admin's campaign picker."""
    with gr.Accordion("Rigor: tie-aware and style-controlled ratings, robustness, raters", open=False):
        with gr.Row():
            method = gr.Radio(list(ratings.METHODS), value="rk", label="Method (rk: Rao-Kupper, ties modelled)")
            rounds = gr.Number(100, label="Bootstrap rounds", precision=0)
            style = gr.Checkbox(True, label="Style control (length and markdown as covariates)")
            below = gr.Number(ratings.PROVISIONAL_BELOW, label="Provisional below (votes)", precision=0)
            go = gr.Button("Compute")
        table = gr.Dataframe(pd.DataFrame(columns=RATING_COLUMNS + STYLE_COLUMNS), interactive=False,
                             label="Ratings (95% bootstrap intervals; rank_change > 0: moves up once style is "
                                   "accounted for)", elem_id="arena-rigor-ratings")
        robust = gr.Markdown(elem_id="arena-rigor-dropk")
        plot = gr.Plot(label="Harmlessness vs helpfulness (paper Figure 2)", visible=False)
        raters_btn = gr.Button("Show raters")
        raters_md = gr.Markdown()
        raters = gr.Dataframe(pd.DataFrame(columns=RATER_COLUMNS), interactive=False, wrap=True, label="Raters", elem_id="arena-raters")
        with gr.Row():
            name = gr.Textbox(label="Rater name")
            reason = gr.Textbox(label="Reason (kept with the exclusion)")
            out_btn = gr.Button("Exclude rater's votes")
            in_btn = gr.Button("Include again")
        msg = gr.Markdown()
    go.click(bind(rigor_ratings, ctx), [campaign, method, rounds, style, below], [table, robust, plot], api_name=False)
    raters_btn.click(bind(rater_view, ctx), [campaign], [raters, raters_md], api_name=False)
    exclude, include = gr.State(True), gr.State(False)
    out_btn.click(bind(set_exclusion, ctx), [campaign, name, exclude, reason], msg, api_name=False).then(
        bind(rater_view, ctx), [campaign], [raters, raters_md])
    in_btn.click(bind(set_exclusion, ctx), [campaign, name, include, reason], msg, api_name=False).then(
        bind(rater_view, ctx), [campaign], [raters, raters_md])
