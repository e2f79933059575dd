"""Labels tab: how AI soft labels agree with human choices, where they disagree, and HHH accuracy per model.

The rows come from `cai.queries.labels` and the numbers from `cai.evals.agreement.summarize` and
`cai.evals.label_stats` over them (so a run still in progress shows its partial figures); plots are plotly figures; pair texts,
principles and chain-of-thought are escaped before they reach the page.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from sqlite_utils import Database

from cai import data, runs
from cai.evals import agreement
from cai.evals import consistency as C
from cai.evals.label_stats import ai_summary, confusion
from cai.queries import catalog
from cai.queries import labels as Q
from cai.transcript import last_human_turn
from ui.common import (
    BROWSE_ROLES,
    EDIT_ROLES,
    AppContext,
    bind,
    clip,
    esc,
    on_page_load,
    pre,
    read_upload,
    require,
)

DISAGREE_COLUMNS = ["pair", "principle", "p(chosen)", "chosen as A", "chosen as B", "prompt"]
HHH_COLUMNS = ["run", "model", "cot", "samples", "n", "accuracy", "order-averaged", "correct as A", "correct as B"]
DISAGREE_LIMIT = 200
CONSISTENCY_COLUMNS = ["feedback model", "source", "runs", "pairs in both orders", "consistent"]
PRINCIPLE_COLUMNS = ["principle", "pairs", "agreement", "in both orders", "consistent"]
AI_PAIR_COLUMNS = ["pair", "p(chosen)", "p(first better)", "principles", "prompt"]
AI_PAIR_LIMIT = 200
PREF_FILES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")  # what `cai prefs import` reads
NO_AI_SETS = ("No AI preference set yet: launch “AI labels (feedback model)” on a “Response pairs” run from the "
              "Dashboard; its label distribution, p histogram and mean p per principle are plotted here.")
NO_RUN = ("No agreement run for this preference set yet: launch one from the Dashboard (stage “AI vs human "
          "agreement”); its calibration, position-bias and per-principle plots appear here.")
NO_HUMAN_SETS = ("No human preference set yet: import one above (hh-rlhf chosen/rejected JSONL) or with "
                 "`cai prefs import FILE --name NAME`.")


# ----------------------------------------------------------------------------- pure pieces


def summary_markdown(s: dict[str, Any], prefix: str = "") -> str:
    """The run's headline: a judge warning first when consistency or kappa says the judge reads position or
    is at chance, then the order-averaged agreement with its 95% interval and n (`prefix` goes before it)."""
    pos = s.get("position", {})

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.1%}"

    warning = agreement.judge_warning(s)
    oa = s.get("order_averaged") or {}
    ci = (f" (95% CI {pct(oa['ci_low'])}–{pct(oa['ci_high'])}, n = {oa['n']} pairs)"
          if oa.get("ci_low") is not None else "")
    return (
        (f"⚠️ **{warning}**  \n" if warning else "")  # our own words: no user text to escape
        + f"{prefix}**{s['n']} pairs** · agreement with humans (both option orders averaged) "
        f"**{pct(oa.get('agreement', s['agreement']))}**{ci} · from the order-averaged p(chosen) "
        f"{pct(s['agreement'])} · mean p(chosen) {_num(s.get('mean_p_chosen'))} · ECE {_num(s.get('ece'))}  \n"
        f"Position bias: agreement when the human's choice is shown as (A) **{pct(pos.get('chosen_shown_A'))}**, "
        f"as (B) **{pct(pos.get('chosen_shown_B'))}** · mean p(option A) {_num(pos.get('mean_p_option_A'))} "
        "(0.5 = no preference for a position)"
    )


def rigor_markdown(s: dict[str, Any]) -> str:
    """Position consistency, ties and Cohen's kappa of a summary (absent keys: an older run)."""
    cons = s.get("consistency") or {}

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.1%}"

    return (
        f"Position consistency (both orders pick the same response): **{pct(cons.get('rate'))}** of "
        f"{cons.get('n', 0)} pairs · ties (p within {s.get('tie_band', C.TIE_BAND)} of 0.5) {s.get('ties', 0)}, "
        f"agreement on the rest {pct(s.get('agreement_decisive'))} · Cohen's kappa AI vs human "
        f"{_num(s.get('kappa'))} (0 = chance)"
    )


def consistency_by_model(db: Database) -> pd.DataFrame:
    """Position consistency per feedback model and source (`cai.queries.labels.consistency_by_model`)."""
    rows = [{"feedback model": r["model"], "source": r["source"], "runs": r["runs"], "pairs in both orders": r["pairs"],
             "consistent": r["consistent"]} for r in Q.consistency_by_model(db)]
    return pd.DataFrame(rows, columns=CONSISTENCY_COLUMNS)


def principle_table(s: dict[str, Any]) -> pd.DataFrame:
    """Agreement and position consistency per comparison principle of one agreement run's summary."""
    cons = (s.get("consistency") or {}).get("per_principle", {})
    rows = [{"principle": k, "pairs": v["n"], "agreement": v["agreement"],
             "in both orders": cons.get(k, {}).get("n", 0), "consistent": cons.get(k, {}).get("rate")}
            for k, v in s.get("per_principle", {}).items()]
    return pd.DataFrame(rows, columns=PRINCIPLE_COLUMNS)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def calibration_figure(bins: list[dict[str, Any]]) -> go.Figure:
    """Reliability diagram: mean predicted p against how often that response was the human's choice."""
    used = [b for b in bins if b["n"]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"dash": "dash", "color": "#999"}))
    fig.add_trace(go.Scatter(x=[b["mean_p"] for b in used], y=[b["frequency"] for b in used], mode="lines+markers",
                             name="AI labels", text=[f"n={b['n']}" for b in used],
                             marker={"size": [6 + min(b["n"], 40) / 2 for b in used]}))
    fig.update_layout(title="Calibration (reliability diagram)", xaxis_title="predicted p",
                      yaxis_title="frequency chosen by humans", xaxis={"range": [0, 1]}, yaxis={"range": [0, 1]},
                      height=360, margin={"l": 50, "r": 20, "t": 50, "b": 50}, legend={"x": 0.02, "y": 0.98})
    return fig


def principle_figure(per: dict[str, dict[str, Any]]) -> go.Figure:
    names = sorted(per, key=lambda n: (-(per[n]["agreement"] or 0), n))
    fig = go.Figure(go.Bar(x=[per[n]["agreement"] for n in names], y=names, orientation="h",
                           text=[f"{per[n]['agreement']:.0%} (n={per[n]['n']})" for n in names],
                           textposition="auto"))
    fig.add_vline(x=0.5, line_dash="dash", line_color="#999")
    fig.update_layout(title="Agreement per comparison principle", xaxis={"range": [0, 1], "title": "agreement"},
                      height=max(260, 40 + 28 * len(names)), margin={"l": 160, "r": 20, "t": 50, "b": 40})
    return fig


def position_figure(pos: dict[str, Any]) -> go.Figure:
    labels = ["human's choice shown as (A)", "human's choice shown as (B)", "mean p(option A)"]
    values = [pos.get("chosen_shown_A"), pos.get("chosen_shown_B"), pos.get("mean_p_option_A")]
    fig = go.Figure(go.Bar(x=labels, y=[v or 0 for v in values],
                           text=["—" if v is None else f"{v:.2f}" for v in values], textposition="auto",
                           marker_color=["#6366f1", "#a855f7", "#f59e0b"]))
    fig.add_hline(y=0.5, line_dash="dash", line_color="#999")
    fig.update_layout(title="Position bias", yaxis={"range": [0, 1]}, height=360,
                      margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return fig


def disagreements(db: Database, run_id: int, limit: int = DISAGREE_LIMIT) -> pd.DataFrame:
    """Pairs where the AI preferred the response the human rejected, most confident first (a page, not all)."""
    rows = [
        {"pair": r["pair_id"], "principle": r["principle"], "p(chosen)": round(r["p_chosen"], 3),
         "chosen as A": None if r["p_first"] is None else round(r["p_first"], 3),
         "chosen as B": None if r["p_second"] is None else round(r["p_second"], 3),
         "prompt": clip(last_human_turn(r["prompt_tail"] or ""), 110)}
        for r in Q.disagreements(db, run_id, limit)
    ]
    return pd.DataFrame(rows, columns=DISAGREE_COLUMNS)


def pair_html(db: Database, run_id: int, pair_id: int) -> str:
    row = Q.agreement_pair(db, run_id, pair_id)
    principle, p, p_first, p_second = row["principle"], row["p_chosen"], row["p_first"], row["p_second"]
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    verdict = "agrees" if p > 0.5 else "disagrees" if p < 0.5 else "is undecided"
    parts = [
        f"<h4>Pair {pair_id} · the AI {verdict} with the human "
        f'<span class="cai-badge">p(human\'s choice better) = {p:.3f}</span></h4>',
        f'<p class="cai-meta">principle: {esc(principle)} · chosen shown as (A): {_num(p_first)} · '
        f"as (B): {_num(p_second)}</p>",
        f"<h4>Conversation</h4>{pre(prompt.strip())}",
        '<div style="display:flex;gap:12px"><div style="flex:1"><h4>Human\'s choice</h4>'
        f"{pre(chosen.strip())}</div><div style=\"flex:1\"><h4>Rejected by the human</h4>{pre(rejected.strip())}</div></div>",
    ]
    for r in row["meta"].get("readings", []):
        cot = f"<div>Chain of thought:</div>{pre(r['cot'])}" if r.get("cot") else ""
        parts.append(f"<details open><summary>{esc(reading_text(r))}</summary>{cot}</details>")
    return "".join(parts)


def reading_text(r: dict[str, Any], first: str = "the human's choice", second: str = "the rejected response") -> str:
    """One reading in words: which response each letter showed, then p and the log-probs labelled (A), (B).

    Order "AB" shows the first response as (A); "BA" shows it as (B), so p(first better) is p of option (B).
    """
    ba = r.get("order") == "BA"
    a_is, b_is = (second, first) if ba else (first, second)
    lp = r.get("logprobs")
    logprobs = (f"log-probs (A) {lp[0]:.3f}, (B) {lp[1]:.3f}" if isinstance(lp, list) and len(lp) == 2
                else f"log-probs {_rounded(lp)}")
    return (f"Reading: order {r.get('order')} ((A) = {a_is}, (B) = {b_is}), principle {r.get('principle')}, "
            f"p({first} better) = {_num(r.get('p'))}, {logprobs}")


def _rounded(values: Any) -> Any:
    return [round(v, 3) for v in values] if isinstance(values, list) else values


def hhh_frame(db: Database) -> pd.DataFrame:
    rows = [{"run": r["run"], "model": r["model"], "cot": r["cot"], "samples": r["samples"], "n": r["n"],
             "accuracy": r["accuracy"], "order-averaged": r["accuracy_order_avg"], "correct as A": r["correct_shown_A"],
             "correct as B": r["correct_shown_B"]} for r in Q.hhh_results(db)]
    return pd.DataFrame(rows, columns=HHH_COLUMNS)


def hhh_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    labels = [f"{m} (#{r}{', CoT' if c else ''})" for r, m, c in zip(frame["run"], frame["model"], frame["cot"],
                                                                     strict=True)]
    fig.add_trace(go.Bar(x=labels, y=frame["accuracy"], name="file order"))
    fig.add_trace(go.Bar(x=labels, y=frame["order-averaged"], name="order-averaged"))
    fig.add_hline(y=0.5, line_dash="dash", line_color="#999")
    fig.update_layout(title="HHH eval accuracy per model", yaxis={"range": [0, 1]}, barmode="group", height=340,
                      margin={"l": 40, "r": 20, "t": 50, "b": 60})
    return fig


def ai_figures(pairs: list[dict[str, Any]], s: dict[str, Any]) -> tuple[go.Figure, go.Figure, go.Figure]:
    dist = go.Figure(go.Bar(x=list(s["labels"]), y=list(s["labels"].values()), text=list(s["labels"].values()),
                            textposition="auto"))
    dist.update_layout(title="Label distribution (which sampled response the AI preferred)", height=320,
                       margin={"l": 40, "r": 20, "t": 50, "b": 40})
    hist = go.Figure(go.Histogram(x=[r["p"] for r in pairs], xbins={"start": 0.5, "end": 1.0001, "size": 0.05}))
    hist.update_layout(title="p(chosen better): how sure each label is", xaxis={"range": [0.5, 1], "title": "p"},
                       yaxis_title="pairs", height=320, margin={"l": 40, "r": 20, "t": 50, "b": 40})
    per = s["per_principle"]
    names = sorted(per, key=lambda n: (-per[n]["mean_p"], n))
    bars = go.Figure(go.Bar(x=[per[n]["mean_p"] for n in names], y=names, orientation="h",
                            text=[f"{per[n]['mean_p']:.2f} (n={per[n]['n']})" for n in names], textposition="auto"))
    bars.update_layout(title="Mean p(chosen) per comparison principle", xaxis={"range": [0.5, 1], "title": "mean p"},
                       height=max(260, 40 + 28 * len(names)), margin={"l": 160, "r": 20, "t": 50, "b": 40})
    return dist, hist, bars


def ai_pair_frame(pairs: list[dict[str, Any]], limit: int = AI_PAIR_LIMIT) -> pd.DataFrame:
    """The pair browser: least sure labels first (where the feedback model hesitated)."""
    rows = sorted(pairs, key=lambda r: (r["p"], r["id"]))[:limit]
    return pd.DataFrame([
        {"pair": r["id"], "p(chosen)": round(r["p"], 3),
         "p(first better)": None if r["p_first"] is None else round(r["p_first"], 3),
         "principles": ", ".join(dict.fromkeys(r["principles"])), "prompt": clip(last_human_turn(r["prompt"][-200:]), 110)}
        for r in rows], columns=AI_PAIR_COLUMNS)


def ai_pair_html(db: Database, pair_id: int) -> str:
    row = Q.pair(db, pair_id)
    prompt, chosen, rejected, p, m = row["prompt"], row["chosen"], row["rejected"], row["p"], row["meta"]
    parts = [
        f'<h4>Pair {pair_id} <span class="cai-badge">p(chosen better) = {p:.3f}</span></h4>',
        f"<h4>Conversation</h4>{pre(prompt.strip())}",
        '<div style="display:flex;gap:12px"><div style="flex:1"><h4>Chosen by the AI</h4>'
        f"{pre(chosen.strip())}</div><div style=\"flex:1\"><h4>Rejected by the AI</h4>{pre(rejected.strip())}</div></div>",
    ]
    for r in m.get("readings", []):
        text = reading_text(r, "the first sampled response", "the second sampled response")
        cot = f"<div>Chain of thought:</div>{pre(r['cot'])}" if r.get("cot") else ""
        parts.append(f"<details><summary>{esc(text)}</summary>{cot}</details>")
    return "".join(parts)


def import_upload(ctx: AppContext, path: str | None, name: str, kind: str, source: str,
                  request: gr.Request) -> str:
    """`cai prefs import` from the browser: the same reader, the same one-line errors, nothing half-stored."""
    require(ctx, request, EDIT_ROLES)
    try:
        p = read_upload(path, allowed=PREF_FILES)
    except gr.Error as exc:
        return f"Error: {esc(exc.message)}"
    name = (name or "").strip() or p.name.split(".")[0]
    try:
        n = data.import_prefs(ctx.db(), p, name, kind=(kind or "harmless").strip(), source=source)
    except (data.DataError, LookupError, ValueError) as exc:
        return f"Error: {esc(str(exc).replace(str(p.parent) + '/', ''))}"
    return f"Imported {n} pairs as preference set “{esc(name)}” ({esc(source)}, {esc(kind)})."


def import_block(ctx: AppContext, prefix: str) -> tuple[Any, Any]:
    """The upload form (Labels tab and Dashboard); returns (import button event, status) for follow-ups."""
    gr.Markdown("Upload a preference file as `cai prefs import` reads it: JSONL (or .jsonl.gz) of hh-rlhf "
                "`chosen`/`rejected` transcripts, or `prompt`/`chosen`/`rejected`[/`p`] rows.")
    with gr.Row():
        upload = gr.File(label="Preference file (.jsonl, .jsonl.gz)", file_types=list(PREF_FILES), type="filepath",
                         elem_id=f"{prefix}-prefs-file", scale=2)
        with gr.Column(scale=2):
            name = gr.Textbox(label="Name of the new set", info="empty = the file's name · --name",
                              elem_id=f"{prefix}-prefs-name")
            with gr.Row():
                kind = gr.Textbox("harmless", label="What the pairs compare", info="harmless, helpful, … · --kind")
                source = gr.Dropdown(list(data.PREF_SOURCES), value="human", label="Who labelled them",
                                     info="--source")
    btn = gr.Button("Import preference set", variant="primary", elem_id=f"{prefix}-prefs-import")
    status = gr.Markdown(elem_id=f"{prefix}-prefs-status")
    event = btn.click(bind(import_upload, ctx), [upload, name, kind, source], status)
    return event, status


# ----------------------------------------------------------------------------- handlers


def human_sets(ctx: AppContext, request: gr.Request) -> Any:
    require(ctx, request, BROWSE_ROLES)
    choices = [(f"{r['name']} ({r['pairs']} pairs)", r["name"]) for r in catalog.pref_sets(ctx.db(), "human")]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def sets_note(ctx: AppContext, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    found = catalog.pref_sets(ctx.db(), "human")
    return "" if found else NO_HUMAN_SETS


def ai_sets(ctx: AppContext, request: gr.Request) -> Any:
    require(ctx, request, BROWSE_ROLES)
    choices = [(f"{r['name']} ({r['pairs']} pairs)", r["name"]) for r in catalog.pref_sets(ctx.db(), "ai")]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def show_ai_set(ctx: AppContext, name: str | None, request: gr.Request) -> list[Any]:
    """Summary line, label distribution, p histogram, per-principle p and the pair browser of an AI set, and
    whether the plots show (no empty frames before there is a set)."""
    require(ctx, request, BROWSE_ROLES)
    if not name:
        return [NO_AI_SETS, None, None, None, pd.DataFrame(columns=AI_PAIR_COLUMNS), gr.Column(visible=False)]
    try:
        pairs = Q.ai_pairs(ctx.db(), name)
    except LookupError as exc:
        raise gr.Error(str(exc)) from None
    s = ai_summary(pairs)
    head = (f"**{s['n']} pairs** in {esc(name)} · mean p(chosen) {_num(s['mean_p'])} · {s['confident']} labels "
            "with p ≥ 0.9 · no human labels: these figures describe the AI's labels, not their accuracy")
    return [head, *ai_figures(pairs, s), ai_pair_frame(pairs), gr.Column(visible=bool(pairs))]


def open_ai_pair(ctx: AppContext, pair_id: float | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not pair_id:
        return "<p>Pick a pair in the table (or type its id).</p>"
    try:
        return ai_pair_html(ctx.db(), int(pair_id))
    except LookupError as exc:
        raise gr.Error(str(exc)) from None


def label_runs(ctx: AppContext, prefs: str | None, request: gr.Request) -> Any:
    """Agreement runs over the chosen human set, newest first."""
    require(ctx, request, BROWSE_ROLES)
    found = Q.agreement_runs(ctx.db(), prefs)
    choices = [(f"#{r['id']} · {r['config'].get('feedback_model')} · {r['status']}", r["id"]) for r in found]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


def show_run(ctx: AppContext, run_id: int | None, request: gr.Request) -> list[Any]:
    """Summary, confusion table, three figures and the disagreements of one agreement run, and whether the
    figures show (hidden, with a line saying what fills them, until the run has labels)."""
    require(ctx, request, BROWSE_ROLES)
    empty = pd.DataFrame(columns=DISAGREE_COLUMNS)
    hidden = gr.Column(visible=False)
    if not run_id:
        return [NO_RUN, confusion([]), None, None, None, empty, hidden]
    db = ctx.db()
    run = runs.get_run(db, int(run_id))
    rows = Q.agreement_rows(db, int(run_id))
    if not rows:
        return [f"Run #{run_id} is {run['status']} and has no labels yet: its plots appear with the first labels.",
                confusion([]), None, None, None, empty, hidden]
    s = agreement.summarize(rows, int(run["config"].get("bins") or 10),
                            float(run["config"].get("tie_band", C.TIE_BAND)))
    head = f"Run #{run_id} ({esc(run['status'])}, feedback model {esc(run['config'].get('feedback_model'))}): "
    return [summary_markdown(s, head), confusion(rows), calibration_figure(s["calibration"]),
            principle_figure(s["per_principle"]), position_figure(s["position"]), disagreements(db, int(run_id)),
            gr.Column(visible=True)]


def consistency_view(ctx: AppContext, run_id: int | None, request: gr.Request) -> list[Any]:
    """The chosen run's consistency line and per-principle table, and the per-model table of all runs."""
    require(ctx, request, BROWSE_ROLES)
    db = ctx.db()
    by_model = consistency_by_model(db)
    rows = Q.agreement_rows(db, int(run_id)) if run_id else []
    if not rows:
        return ["", pd.DataFrame(columns=PRINCIPLE_COLUMNS), by_model]
    run = runs.get_run(db, int(run_id))  # type: ignore[arg-type]
    band = float(run["config"].get("tie_band", C.TIE_BAND))
    s = agreement.summarize(rows, int(run["config"].get("bins") or 10), band)
    return [rigor_markdown(s), principle_table(s), by_model]


def open_pair(ctx: AppContext, run_id: int | None, pair_id: float | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not run_id or not pair_id:
        return "<p>Pick a pair in the disagreements table (or type its id).</p>"
    try:
        return pair_html(ctx.db(), int(run_id), int(pair_id))
    except LookupError as exc:
        raise gr.Error(str(exc)) from None


def hhh_note(ctx: AppContext, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if runs.list_runs(ctx.db(), kind="hhh", limit=1):
        return ""
    return ("No HHH eval yet: launch “HHH eval” from the Dashboard, or `cai eval hhh --data FILE --model tiny`.")


def hhh_view(ctx: AppContext, request: gr.Request) -> tuple[pd.DataFrame, Any]:
    """The HHH table, and its chart (hidden while there are no HHH runs)."""
    require(ctx, request, BROWSE_ROLES)
    frame = hhh_frame(ctx.db())
    return frame, gr.Plot(hhh_figure(frame) if len(frame) else None, visible=bool(len(frame)))


# ----------------------------------------------------------------------------- layout


def build(ctx: AppContext) -> None:
    with gr.Accordion("Import a preference set (admin)", open=False):
        imported, _ = import_block(ctx, "labels")
    gr.Markdown("### AI labels against human choices")
    sets_hint = gr.Markdown(elem_id="labels-empty")
    with gr.Row():
        prefs = gr.Dropdown([], label="Human preference set", scale=2, elem_id="labels-prefs")
        run = gr.Dropdown([], label="Agreement run (AI labels of that set)", scale=2, elem_id="labels-run")
        refresh = gr.Button("↻ Refresh", scale=0)
    summary = gr.Markdown(NO_RUN, elem_id="labels-summary")
    rigor = gr.Markdown(elem_id="labels-consistency")
    with gr.Column(visible=False, elem_id="labels-plots") as run_plots:  # no empty frames before a run has labels
        with gr.Row():
            calib = gr.Plot(label="Calibration", show_label=False)
            position = gr.Plot(label="Position bias", show_label=False)
        with gr.Row():
            principle = gr.Plot(label="Per principle", show_label=False)
            with gr.Column():
                conf = gr.Dataframe(confusion([]), interactive=False, label="Confusion (one count per scored order)",
                                    elem_id="labels-confusion")
    with gr.Row():
        per_principle = gr.Dataframe(pd.DataFrame(columns=PRINCIPLE_COLUMNS), interactive=False,
                                     label="Agreement and position consistency per principle",
                                     elem_id="labels-principles")
        per_model = gr.Dataframe(pd.DataFrame(columns=CONSISTENCY_COLUMNS), interactive=False,
                                 label="Position consistency per feedback model (all agreement, label and HHH runs)",
                                 elem_id="labels-consistency-models")
    gr.Markdown(f"#### Disagreements (most confident first, up to {DISAGREE_LIMIT})")
    table = gr.Dataframe(pd.DataFrame(columns=DISAGREE_COLUMNS), interactive=False, wrap=True, max_height=320,
                         elem_id="labels-disagreements")
    with gr.Row():
        pair_id = gr.Number(None, label="Pair id", precision=0, scale=0, min_width=140, elem_id="labels-pair-id")
        open_btn = gr.Button("Open pair", scale=0)
    pair_view = gr.HTML(elem_id="labels-pair")
    gr.Markdown("### HHH eval by model")
    hhh_hint = gr.Markdown(elem_id="labels-hhh-empty")
    hhh_table = gr.Dataframe(pd.DataFrame(columns=HHH_COLUMNS), interactive=False, elem_id="labels-hhh")
    hhh_plot = gr.Plot(label="HHH accuracy", show_label=False, visible=False)

    gr.Markdown("### AI preference sets (no human labels)")
    with gr.Row():
        ai_set = gr.Dropdown([], label="AI preference set", scale=2, elem_id="labels-ai-set")
        ai_refresh = gr.Button("↻ Refresh", scale=0)
    ai_head = gr.Markdown(NO_AI_SETS, elem_id="labels-ai-summary")
    with gr.Column(visible=False, elem_id="labels-ai-plots") as ai_plots:  # no empty frames before there is a set
        with gr.Row():
            ai_dist = gr.Plot(show_label=False)
            ai_hist = gr.Plot(show_label=False)
        ai_per = gr.Plot(show_label=False)
    ai_table = gr.Dataframe(pd.DataFrame(columns=AI_PAIR_COLUMNS), interactive=False, wrap=True, max_height=320,
                            elem_id="labels-ai-pairs")
    with gr.Row():
        ai_pair_id = gr.Number(None, label="Pair id", precision=0, scale=0, min_width=140)
        ai_open = gr.Button("Open AI-labelled pair", scale=0, elem_id="labels-ai-open")
    ai_view = gr.HTML(elem_id="labels-ai-pair")

    outputs = [summary, conf, calib, principle, position, table, run_plots]
    do_sets, do_runs, do_show = bind(human_sets, ctx), bind(label_runs, ctx), bind(show_run, ctx)
    on_page_load(do_sets, None, [prefs])
    on_page_load(bind(sets_note, ctx), None, [sets_hint])
    on_page_load(bind(hhh_view, ctx), None, [hhh_table, hhh_plot])
    on_page_load(bind(hhh_note, ctx), None, [hhh_hint])
    ai_outputs = [ai_head, ai_dist, ai_hist, ai_per, ai_table, ai_plots]
    on_page_load(bind(ai_sets, ctx), None, [ai_set]).then(bind(show_ai_set, ctx), ai_set, ai_outputs)
    imported.then(do_sets, None, prefs).then(bind(sets_note, ctx), None, sets_hint)
    ai_set.change(bind(show_ai_set, ctx), ai_set, ai_outputs)
    ai_refresh.click(bind(ai_sets, ctx), None, ai_set).then(bind(show_ai_set, ctx), ai_set, ai_outputs)
    def pick_ai(evt: gr.SelectData) -> int | None:
        return int(evt.row_value[0]) if evt.row_value else None

    ai_table.select(pick_ai, None, ai_pair_id).then(
        bind(open_ai_pair, ctx), ai_pair_id, ai_view)
    ai_open.click(bind(open_ai_pair, ctx), ai_pair_id, ai_view)
    prefs.change(do_runs, prefs, run)
    rigor_outputs = [rigor, per_principle, per_model]
    do_rigor = bind(consistency_view, ctx)
    run.change(do_show, run, outputs).then(do_rigor, run, rigor_outputs)
    refresh.click(do_sets, None, prefs).then(do_runs, prefs, run).then(do_show, run, outputs).then(
        bind(hhh_view, ctx), None, [hhh_table, hhh_plot]).then(do_rigor, run, rigor_outputs)
    on_page_load(do_rigor, [run], rigor_outputs)

    def pick(evt: gr.SelectData) -> int | None:
        return int(evt.row_value[0]) if evt.row_value else None

    table.select(pick, None, pair_id).then(bind(open_pair, ctx), [run, pair_id], pair_view)
    open_btn.click(bind(open_pair, ctx), [run, pair_id], pair_view)
