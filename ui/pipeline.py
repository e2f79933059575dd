"""Pipeline page: launch a whole recipe, watch its stage runs, read the report of the paper's figures.

Everything comes from `cai.pipeline` (a pipeline is an ordinary run over ordinary runs): the page edits a
recipe's YAML (a shipped one, or pasted), shows the `cai pipeline run` line it equals, and renders the stage
table and the report (`cai.pipeline.report`) as escaped HTML.
"""

from __future__ import annotations

import shlex
from typing import Any

import gradio as gr

from cai import pipeline, runs
from cai.pipeline import report as R
from cai.pipeline.recipe import RECIPES_DIR
from cai.pipeline.runner import show as show_pipeline
from cai.pipeline.runner import values_text
from ui.common import BROWSE_ROLES, EDIT_ROLES, AppContext, bind, esc, on_page_load, quietly, require

VERDICT_COLOURS = {R.AS: "#1a7f37", R.NOT_AS: "#cf222e", R.UNSURE: "#9a6700"}


# ----------------------------------------------------------------------------- pure pieces


def shipped() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_text(name: str | None) -> str:
    return (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8") if name in shipped() else ""


def command_line(name: str | None, text: str, sets: list[str]) -> str:
    """The `cai pipeline run` line a launch equals (a pasted recipe is named by a file to save it to)."""
    same = name in shipped() and (text or "").rstrip() == recipe_text(name).rstrip()  # the editor drops the last newline
    source = name if same else "my-recipe.yaml"
    return "cai pipeline run " + " ".join(shlex.quote(x) for x in [source, *(a for s in sets for a in ("--set", s))])


def stages_html(shown: dict[str, Any]) -> str:
    head = f"<p><b>Pipeline #{shown['id']}</b> ({esc(shown['name'])}): {esc(shown['status'])}</p>"
    if shown["error"]:
        head += f"<p><b>Error:</b> {esc(shown['error'])}</p>"
    rows = "".join(
        f"<tr><td>{esc(s['stage'])}{esc(' [' + values_text(s['sweep']) + ']' if s.get('sweep') else '')}</td>"
        f"<td>{esc(s['kind'])}</td>"
        f"<td>{'' if s['run_id'] is None else '#' + str(s['run_id'])}</td><td>{esc(s['status'])}</td>"
        f"<td>{s['done']}/{s['total']}</td><td>{esc('' if s.get('output') is None else s['output'])}</td></tr>"
        for s in shown["stages"])
    return head + ("<table class='pipe-stages'><tr><th>stage</th><th>kind</th><th>run</th><th>status</th>"
                   f"<th>progress</th><th>hands on</th></tr>{rows}</table>")


def report_html(report: dict[str, Any]) -> str:
    """Each figure: title, verdict, the paper's claim and what was measured here, with the notes that say why a
    measured figure cannot tell or what to read it with (all text escaped)."""
    rows = []
    for key, title in ((k, t) for k, t in R.TITLES.items() if k in report):
        fig = report[key]
        notes = "".join(f"<br><small class='pipe-note'>{esc(line)}</small>" for line in R.notes(key, fig))
        rows.append(
            f"<tr><th>{esc(title)}</th><td style='color:{VERDICT_COLOURS[fig['verdict']]}'><b>{esc(fig['verdict'])}"
            f"</b></td><td>{esc(fig['claim'])}</td><td>{esc(R.headline(key, fig))}{notes}</td></tr>")
    return ("<table class='pipe-report'><tr><th>figure</th><th>verdict</th><th>the paper</th><th>here</th></tr>"
            + "".join(rows) + "</table>")


# ----------------------------------------------------------------------------- handlers


def pick(name: str | None) -> tuple[str, str]:
    text = recipe_text(name)
    return text, command_line(name, text, [])


def preview(ctx: AppContext, name: str | None, text: str, sets: str, request: gr.Request) -> tuple[str, str]:
    """The recipe checked and resolved (what would run), and the equal command line."""
    require(ctx, request, BROWSE_ROLES)
    overrides = shlex.split(sets or "")
    try:
        recipe, _ = pipeline.resolve(ctx.db(), name or "recipe", overrides, text)
    except (ValueError, LookupError) as exc:
        raise gr.Error(str(exc)) from None
    return f"```yaml\n{pipeline.dump(recipe)}```", f"`{command_line(name, text, overrides)}`"


def pipelines(ctx: AppContext, request: gr.Request, selected: int | None = None) -> Any:
    require(ctx, request, BROWSE_ROLES)
    found = runs.list_runs(ctx.db(), kind="pipeline")
    choices = [(f"#{r['id']} · {r['config'].get('recipe')} · {r['status']}", r["id"]) for r in found]
    value = selected if selected is not None else (choices[0][1] if choices else None)
    return gr.Dropdown(choices=choices, value=value)


def launch(ctx: AppContext, name: str | None, text: str, sets: str, request: gr.Request) -> tuple[str, Any]:
    require(ctx, request, EDIT_ROLES)
    try:
        run_id = pipeline.create(ctx.db(), name or "recipe", shlex.split(sets or ""), text)
    except (ValueError, LookupError) as exc:
        raise gr.Error(str(exc)) from None
    runs.launch(ctx.db_path, run_id)
    return f"Started pipeline #{run_id}", pipelines(ctx, request, run_id)


def show(ctx: AppContext, run_id: int | None, request: gr.Request) -> tuple[str, str]:
    require(ctx, request, BROWSE_ROLES)
    if not run_id:
        return "<p>No pipeline yet: launch one above.</p>", ""
    try:
        shown = show_pipeline(ctx.db(), int(run_id))
        return stages_html(shown), report_html(R.build(ctx.db(), int(run_id)))
    except (ValueError, LookupError) as exc:
        raise gr.Error(str(exc)) from None


def control(ctx: AppContext, run_id: int | None, action: str, request: gr.Request) -> str:
    """Cancel or resume the whole pipeline (its running stage run is cancelled with it)."""
    require(ctx, request, EDIT_ROLES)
    if not run_id:
        raise gr.Error("Pick a pipeline.")
    try:
        if action == "cancel":
            runs.request_cancel(ctx.db(), int(run_id))
            return f"Cancelling pipeline #{run_id}…"
        runs.resume(ctx.db(), ctx.db_path, int(run_id))
        return f"Resumed pipeline #{run_id}"
    except (ValueError, LookupError) as exc:
        raise gr.Error(str(exc)) from None


def cancel(ctx: AppContext, run_id: int | None, request: gr.Request) -> str:
    return control(ctx, run_id, "cancel", request)


def resume(ctx: AppContext, run_id: int | None, request: gr.Request) -> str:
    return control(ctx, run_id, "resume", request)


def tick(ctx: AppContext, run_id: int | None, last: str | None, request: gr.Request) -> Any:
    """Refresh while the selected pipeline is going, and once more when it has ended."""
    if not run_id:
        return [gr.skip()] * 3
    status = runs.get_run(ctx.db(), int(run_id))["status"]
    if status not in runs.ACTIVE and status == last:
        return [gr.skip()] * 3
    return [*show(ctx, run_id, request), status]


# ----------------------------------------------------------------------------- layout


def build(ctx: AppContext) -> None:
    gr.Markdown("### Pipelines: the whole method in one run, and the paper's figures on your models")
    with gr.Accordion("Launch a recipe (admin)", open=True):
        with gr.Row():
            name = gr.Dropdown(shipped(), value="smoke", label="Shipped recipe", elem_id="pipe-recipe", scale=1)
            sets = gr.Textbox("", label="Overrides (KEY=VALUE, e.g. sl.revisions=2 policy=tiny)", elem_id="pipe-sets",
                              scale=3)
        text = gr.Code(recipe_text("smoke"), language="yaml", label="Recipe (edit freely)", elem_id="pipe-text")
        line = gr.Markdown(f"`{command_line('smoke', recipe_text('smoke'), [])}`", elem_id="pipe-line")
        with gr.Row():
            check = gr.Button("Check", elem_id="pipe-check")
            start = gr.Button("Launch pipeline", variant="primary", elem_id="pipe-launch")
        status = gr.Markdown(elem_id="pipe-status")
        resolved = gr.Markdown(elem_id="pipe-resolved")
    with gr.Row():
        chosen = gr.Dropdown([], label="Pipeline", scale=3, elem_id="pipe-select")
        stop = gr.Button("Cancel", scale=0, elem_id="pipe-cancel")
        again = gr.Button("Resume", scale=0, elem_id="pipe-resume")
    stages = gr.HTML(elem_id="pipe-stages")
    gr.Markdown("#### Report: the paper's figures on this pipeline (`cai pipeline report ID`)")
    report = gr.HTML(elem_id="pipe-report")

    on_page_load(bind(pipelines, ctx), None, [chosen])
    name.change(pick, name, [text, line])
    check.click(bind(preview, ctx), [name, text, sets], [resolved, line])
    start.click(bind(launch, ctx), [name, text, sets], [status, chosen])
    chosen.change(bind(show, ctx), chosen, [stages, report])
    stop.click(bind(cancel, ctx), chosen, status)
    again.click(bind(resume, ctx), chosen, status)
    last = gr.State(None)
    timer = gr.Timer(2.0)
    timer.tick(quietly(bind(tick, ctx), 3), [chosen, last], [stages, report, last], show_progress="hidden")
