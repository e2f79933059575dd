"""Experiments tab: launch a constitution experiment, watch its runs, read the paired revisions and the deltas.

Everything comes from `cai.experiments` (the experiment is an ordinary run over ordinary runs); the tab only
builds the form's config, renders the side-by-side view as escaped HTML (each version's final revision
diffed against the baseline's) and the deltas with their bootstrap intervals as a plotly figure.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from cai import experiments, runs
from cai.config import ConfigError
from cai.constitution import list_constitutions, list_versions
from cai.data import list_prompt_sets
from cai.stages import EXPERIMENT_STAGES, ExperimentConfig
from ui.common import (
    BROWSE_ROLES,
    EDIT_ROLES,
    AppContext,
    bind,
    diff_html,
    esc,
    on_page_load,
    pre,
    quietly,
    require,
)

DELTA_COLUMNS = ["metric", "principle", "version", "baseline mean", "mean", "delta", "CI", "n", "verdict"]
PAIRED_LIMIT = 50


# ----------------------------------------------------------------------------- pure pieces


def deltas_frame(shown: dict[str, Any]) -> pd.DataFrame:
    """One row per (metric, principle, version): both means, the paired delta, its CI and the noise verdict."""
    means = {(m["metric"], m["principle"], m["version"]): m["mean"] for m in shown["means"]}
    rows = []
    for d in shown["deltas"]:
        verdict = {True: "within noise", False: "outside noise", None: "no paired items"}[d["within_noise"]]
        rows.append({
            "metric": d["metric"], "principle": d["principle"] or "(all)", "version": d["version"],
            "baseline mean": means.get((d["metric"], d["principle"], d["baseline"])),
            "mean": means.get((d["metric"], d["principle"], d["version"])),
            "delta": d["delta"], "CI": "" if d["lo"] is None else f"[{d['lo']:+.3f}, {d['hi']:+.3f}]",
            "n": d["n"], "verdict": verdict,
        })
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def deltas_figure(shown: dict[str, Any]) -> go.Figure | None:
    """Each delta as a point with its CI as an error bar; grey when the interval contains 0."""
    ds = [d for d in shown["deltas"] if d["delta"] is not None]
    if not ds:
        return None
    labels = [f"{d['metric']}{' · ' + d['principle'] if d['principle'] else ''} ({d['version']})" for d in ds]
    fig = go.Figure(go.Scatter(
        x=[d["delta"] for d in ds], y=labels, mode="markers",
        marker={"size": 10, "color": ["#999" if d["within_noise"] else "#1f77b4" for d in ds]},
        error_x={"type": "data", "symmetric": False, "array": [d["hi"] - d["delta"] for d in ds],
                 "arrayminus": [d["delta"] - d["lo"] for d in ds]},
        hovertext=[f"n={d['n']}, CI [{d['lo']}, {d['hi']}]" for d in ds],
    ))
    fig.add_vline(x=0, line_dash="dash", line_color="#666")
    fig.update_layout(title=f"Delta vs {ds[0]['baseline']} ({shown['confidence']:.0%} bootstrap CI; grey: within noise)",
                      height=120 + 32 * len(ds), margin={"l": 10, "r": 10, "t": 50, "b": 30},
                      yaxis={"autorange": "reversed"})
    return fig


def progress_html(shown: dict[str, Any]) -> str:
    head = (f"<p><b>Experiment {shown['id']}</b> (run #{shown['run_id']}): {esc(shown['status'])}, "
            f"{shown['done'] or 0}/{shown['total'] or 0} stage runs done · {esc(shown['config']['versions'])} on "
            f"{esc(shown['config']['prompts'])} with {esc(shown['config']['model'])}, seed {shown['config']['seed']}</p>")
    if shown["error"]:
        head += f"<p><b>Error:</b> {esc(shown['error'])}</p>"
    rows = "".join(
        f"<tr><td>{esc(r['version'])}</td><td>{esc(r['stage'])}</td><td>#{r['run_id']}</td>"
        f"<td>{esc(r['status'])}</td><td>{r['done'] or 0}/{r['total'] or 0}</td></tr>"
        for r in shown["runs"])
    return head + ("<table><tr><th>version</th><th>stage</th><th>run</th><th>status</th><th>progress</th></tr>"
                   f"{rows}</table>")


def draws_html(shown: dict[str, Any]) -> str:
    """How often each changed principle was drawn per stage run, and a warning for each edit never drawn."""
    rows = shown.get("principle_draws") or []
    if not rows:
        return ""
    warn = "".join(f"<p><b>⚠️ {esc(w)}</b></p>" for w in shown.get("warnings") or [])
    body = "".join(
        f"<tr><td>{esc(r['version'])}</td><td>{esc(r['principle'])}</td><td>{esc(r['change'])}</td>"
        f"<td>{esc(r['stage'])}</td><td>{r['draws']} of {r['of']}</td><td>{r['baseline_draws']} of "
        f"{r['baseline_of']}</td></tr>" for r in rows)
    return (f"{warn}<p>Changed principles and how often they were drawn:</p><table><tr><th>version</th>"
            "<th>principle</th><th>change</th><th>stage</th><th>draws</th><th>baseline draws</th></tr>"
            f"{body}</table>")


def paired_html(rows: list[dict[str, Any]], limit: int = PAIRED_LIMIT) -> str:
    """Per prompt, one column per version: drawn principles, critiques, flags, PM score, final revision
    (diffed against the baseline's). All model text is escaped."""
    if not rows:
        return "<p>No chains yet.</p>"
    out = []
    for r in rows[:limit]:
        base = r["versions"][0].get("final", "")
        cols = []
        for i, v in enumerate(r["versions"]):
            if v.get("chain_id") is None:
                cols.append(f"<div style='flex:1'><h4>{esc(v['version'])}</h4><p>(not built yet)</p></div>")
                continue
            badges = "".join(f"<span class='cai-badge'>{esc(f)}</span>" for f in v["flags"])
            if v["unchanged"]:
                badges += "<span class='cai-badge'>unchanged</span>"
            score = "" if v["pm_final"] is None else f" · PM {v['pm_final']:.3f}"
            crit = "".join(f"<li><b>{esc(p)}</b>: {esc(c)}</li>" for p, c in zip(v["principles"], v["critiques"],
                                                                                   strict=False))
            final = pre(v["final"]) if i == 0 else diff_html(base, v["final"])
            cols.append(
                f"<div style='flex:1;min-width:0'><h4>{esc(v['version'])}{badges}"
                f"<span class='cai-meta'> chain #{v['chain_id']}{score}</span></h4>"
                f"<div class='cai-meta'>principles: {esc(', '.join(v['principles'])) or '(none)'}</div>"
                f"{final}<details><summary>critiques</summary><ul>{crit}</ul></details></div>")
        out.append(f"<div class='cai-step exp-prompt'><h4>Prompt {r['prompt_id']}</h4>{pre(r['prompt'].strip())}"
                   f"<div style='display:flex;gap:12px;margin-top:6px'>{''.join(cols)}</div></div>")
    more = f"<p>First {limit} of {len(rows)} prompts.</p>" if len(rows) > limit else ""
    return "".join(out) + more


def version_specs(ctx: AppContext) -> list[str]:
    db = ctx.db()
    return [f"{c['name']}@{v['version']}" for c in list_constitutions(db) for v in list_versions(db, c["name"])]


# ----------------------------------------------------------------------------- handlers


def form_choices(ctx: AppContext, request: gr.Request) -> tuple[Any, Any]:
    require(ctx, request, BROWSE_ROLES)
    sets = [s["name"] for s in list_prompt_sets(ctx.db())]
    return gr.CheckboxGroup(choices=version_specs(ctx)), gr.Dropdown(choices=sets, value=sets[0] if sets else None)


def experiment_choices(ctx: AppContext, request: gr.Request, selected: int | None = None) -> Any:
    require(ctx, request, BROWSE_ROLES)
    found = experiments.list_experiments(ctx.db())
    choices = [(f"#{e['id']} · {e['versions']} · {e['prompts']} · {e['status']}", e["id"]) for e in found]
    value = selected if selected is not None else (choices[0][1] if choices else None)
    return gr.Dropdown(choices=choices, value=value)


def launch(ctx: AppContext, versions: list[str], prompts: str | None, model: str, stages: list[str],
           limit: float | None, revisions: float, max_new_tokens: float, seed: float, pm: str, prefs: str,
           principles: str, stratified: bool, request: gr.Request) -> tuple[str, Any]:
    """Create the experiment and start its worker; select it."""
    require(ctx, request, EDIT_ROLES)
    try:
        cfg = ExperimentConfig.from_dict({
            "versions": " ".join(versions or []), "prompts": prompts or "", "model": (model or "").strip() or ctx.model,
            "stages": ",".join(stages or ["sl"]), "limit": int(limit) if limit else None,
            "revisions": revisions, "max_new_tokens": max_new_tokens, "seed": seed, "pm": pm.strip(),
            "prefs": prefs.strip(), "principles": (principles or "").strip(), "stratified": bool(stratified),
        })
        exp_id, run_id = experiments.start(ctx.db(), ctx.db_path, cfg)
    except (ConfigError, ValueError, LookupError) as exc:
        raise gr.Error(str(exc)) from None
    return f"Started experiment {exp_id} (run #{run_id})", experiment_choices(ctx, request, exp_id)


def show(ctx: AppContext, exp_id: int | None, request: gr.Request) -> tuple[str, pd.DataFrame, Any, str]:
    """Progress, deltas table, deltas figure and the paired view of one experiment."""
    require(ctx, request, BROWSE_ROLES)
    if not exp_id:
        return "<p>No experiment selected.</p>", pd.DataFrame(columns=DELTA_COLUMNS), None, ""
    try:
        shown = experiments.show(ctx.db(), int(exp_id))
    except LookupError as exc:
        raise gr.Error(str(exc)) from None
    return (progress_html(shown) + draws_html(shown), deltas_frame(shown), deltas_figure(shown),
            paired_html(experiments.paired(ctx.db(), int(exp_id))))


def campaigns(ctx: AppContext, request: gr.Request) -> Any:
    require(ctx, request, BROWSE_ROLES)
    from cai import arena

    names = [c["name"] for c in arena.list_campaigns(ctx.db())]
    return gr.Dropdown(choices=names, value=names[0] if names else None)


def votes_to_prefs(ctx: AppContext, campaign: str | None, name: str, request: gr.Request) -> str:
    """One action: a campaign's decisive votes become a human preference set (pm, agreement, discover use it)."""
    require(ctx, request, EDIT_ROLES)
    from cai.data import DataError
    from cai.discover import arena_prefs

    if not campaign:
        raise gr.Error("Pick a campaign.")
    try:
        out = arena_prefs(ctx.db(), (name or "").strip() or f"arena-{campaign}", campaign)
    except (DataError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    return (f"Preference set **{esc(out['name'])}** ({out['kind']}): {out['pairs']} pairs from {out['votes']} votes, "
            f"{out['ties_left_out']} ties left out. Use it as human prefs in pm, agreement or discover runs.")


def tick(ctx: AppContext, exp_id: int | None, last: str | None, request: gr.Request) -> Any:
    """The timer: refresh while the selected experiment is going, and once more when it has ended
    (`last` is the status this page last rendered), then leave the page alone."""
    if not exp_id:
        return [gr.skip()] * 5
    status = runs.get_run(ctx.db(), experiments.get(ctx.db(), int(exp_id))["run_id"])["status"]
    if status not in runs.ACTIVE and status == last:
        return [gr.skip()] * 5
    return [*show(ctx, exp_id, request), status]


# ----------------------------------------------------------------------------- layout


def build(ctx: AppContext) -> None:
    gr.Markdown("### Constitution experiments: the same runs under each version, paired by prompt and seed")
    with gr.Accordion("Launch an experiment (admin)", open=True):
        versions = gr.CheckboxGroup([], label="Versions (the first checked is the baseline)", elem_id="exp-versions")
        with gr.Row():
            prompts = gr.Dropdown([], label="Prompt set", elem_id="exp-prompts")
            model = gr.Textbox(ctx.model, label="Policy model", elem_id="exp-model")
            stages = gr.CheckboxGroup(list(EXPERIMENT_STAGES), value=["sl"], label="Stages")
        with gr.Row():
            limit = gr.Number(8, label="Prompts (limit)", precision=0, elem_id="exp-limit")
            revisions = gr.Number(1, label="Revisions", precision=0, elem_id="exp-revisions")
            max_new = gr.Number(64, label="Max new tokens", precision=0, elem_id="exp-max-new")
            seed = gr.Number(0, label="Seed", precision=0)
            pm = gr.Textbox("", label="PM (stage scores)")
            prefs = gr.Textbox("", label="Human prefs (stage agreement)")
        with gr.Row():  # issue 28: an edit that is never drawn cannot show in the deltas
            principles = gr.Textbox("", label="Draw only these principles (SL; comma-separated, e.g. the edited "
                                    "ones; empty = all)", elem_id="exp-principles")
            stratified = gr.Checkbox(False, label="Draw each principle equally often (stratified)",
                                     elem_id="exp-stratified")
        with gr.Row():
            start = gr.Button("Launch experiment", variant="primary", elem_id="exp-launch")
            status = gr.Markdown(elem_id="exp-status")
    with gr.Accordion("Arena votes → human preference set (admin)", open=False):
        with gr.Row():
            campaign = gr.Dropdown([], label="Campaign", elem_id="exp-campaign")
            set_name = gr.Textbox("", label="Preference set name (empty: arena-CAMPAIGN)", elem_id="exp-set-name")
            make_set = gr.Button("Make preference set", scale=0, elem_id="exp-make-set")
        set_status = gr.Markdown(elem_id="exp-set-status")
    with gr.Row():
        chosen = gr.Dropdown([], label="Experiment", scale=3, elem_id="exp-select")
        refresh = gr.Button("Refresh", scale=0, elem_id="exp-refresh")
    progress = gr.HTML(elem_id="exp-progress")
    gr.Markdown("#### Deltas against the baseline")
    table = gr.Dataframe(pd.DataFrame(columns=DELTA_COLUMNS), interactive=False, elem_id="exp-deltas")
    figure = gr.Plot(show_label=False)
    gr.Markdown("#### Side by side")
    paired = gr.HTML(elem_id="exp-paired")

    outputs = [progress, table, figure, paired]
    on_page_load(bind(form_choices, ctx), None, [versions, prompts])
    on_page_load(bind(experiment_choices, ctx), None, [chosen])
    on_page_load(bind(campaigns, ctx), None, [campaign])
    make_set.click(bind(votes_to_prefs, ctx), [campaign, set_name], set_status)
    start.click(bind(launch, ctx), [versions, prompts, model, stages, limit, revisions, max_new, seed, pm, prefs,
                                    principles, stratified], [status, chosen])
    chosen.change(bind(show, ctx), chosen, outputs)
    refresh.click(bind(experiment_choices, ctx), chosen, chosen).then(bind(show, ctx), chosen, outputs)
    last = gr.State(None)
    timer = gr.Timer(2.0)
    timer.tick(quietly(bind(tick, ctx), 5), [chosen, last], [*outputs, last], show_progress="hidden")
