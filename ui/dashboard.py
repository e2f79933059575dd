"""Dashboard tab: launch any stage from a form built from its config dataclass, watch runs, cancel, resume.

Forms come from `cai.config.STAGES` + `fields_help` (defaults and help shown); a submission goes through
`from_dict`, so an invalid value comes back inline as the ConfigError's message, and `cai.runs.start`
runs it in a worker process. The run list refreshes itself with a gr.Timer; lineage is read off the store.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import gradio as gr
import pandas as pd
from sqlite_utils import Database

from cai import runs
from cai.config import STAGES, ConfigError, fields_help
from ui.common import BROWSE_ROLES, EDIT_ROLES, AppContext, bind, esc, on_page_load, quietly, require
from ui.lineage import lineage_html

STAGE_LABELS = {
    "sl": "SL chains (critique → revision)",
    "sft": "SFT (train the SL-CAI model)",
    "pairs": "Response pairs (sample two answers)",
    "label": "AI labels (feedback model)",
    "pm": "Preference model",
    "rl": "RL (RLOO / GRPO)",
    "dpo": "DPO on AI labels",
    "hhh": "HHH eval",
    "agreement": "AI vs human agreement",
    "revision-scores": "PM scores per revision",
    "experiment": "Constitution experiment (paired versions)",
    "discover": "Principle discovery (Inverse CAI)",
}
RUN_COLUMNS = ["id", "kind", "status", "progress", "tok/s", "ETA", "started", "note"]
# Config fields whose values name something in the store: their inputs offer those names.
REFS = {
    "prompts": "prompt_sets", "helpful_prompts": "prompt_sets",
    "model": "models", "policy": "models", "feedback_model": "models", "reward_model": "models", "pm": "models",
    "constitution": "constitutions",
    "chains": "runs:sl", "run": "runs:sl", "pairs": "runs:pairs",
    "ai_prefs": "prefs", "human_prefs": "prefs", "heldout_prefs": "prefs", "prefs": "prefs",
}


# ----------------------------------------------------------------------------- pure helpers


def bar(done: int, total: int, width: int = 12) -> str:
    if not total:
        return "—"
    frac = min(max(done / total, 0.0), 1.0)
    filled = round(frac * width)
    return f"{'▰' * filled}{'▱' * (width - filled)} {done}/{total} ({frac:.0%})"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = []
    for r in rows:
        active = r["status"] in runs.ACTIVE
        out.append({
            "id": r["id"],
            "kind": r["kind"],
            "status": r["status"],
            "progress": bar(r["done"] or 0, r["total"] or 0),
            "tok/s": f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] else "",
            "ETA": eta_text(r["eta_s"]) if active else "",
            "started": (r["started_at"] or r["created_at"] or "")[:19].replace("T", " "),
            "note": (r["error"] or "")[:80],
        })
    return pd.DataFrame(out, columns=RUN_COLUMNS)


def ref_choices(db: Database, ref: str) -> list[tuple[str, str]]:
    if ref == "prompt_sets":
        rows = db.execute("select s.name, s.kind, count(p.id) from prompt_sets s left join prompts p on p.set_id = s.id "
                          "group by s.id order by s.id").fetchall()
        return [(f"{n} ({k}, {c})", n) for n, k, c in rows]
    if ref == "models":
        names = [r[0] for r in db.execute("select name from models order by id").fetchall()]
        return [(n, n) for n in dict.fromkeys(["default", "tiny", *names])]
    if ref == "constitutions":
        return [("(most recent)", "")] + [(r[0], r[0]) for r in db.execute("select name from constitutions").fetchall()]
    if ref == "prefs":
        rows = db.execute("select name, source, kind from pref_sets order by id desc").fetchall()
        return [("(none)", "")] + [(f"{n} ({s}, {k})", n) for n, s, k in rows]
    kind = ref.split(":", 1)[1]
    rows = db.execute("select id, status from runs where kind = ? order by id desc limit 200", [kind]).fetchall()
    return [(f"#{i} ({s})", str(i)) for i, s in rows]


def _first_red_team(db: Database) -> str | None:
    row = db.execute("select name from prompt_sets where kind = 'red-team' order by id limit 1").fetchone()
    return row[0] if row else None


def form_fields(kind: str) -> list[dict[str, Any]]:
    return fields_help(STAGES[kind])


def describe(field: dict[str, Any]) -> str:
    """The help line under a field: its help text plus its constraints and default."""
    bits = [field.get("help", "")]
    lo, hi = field.get("min"), field.get("max")
    if lo is not None and hi is not None:
        bits.append(f"{lo} to {hi}")
    elif lo is not None:
        bits.append(f"≥ {lo}")
    elif hi is not None:
        bits.append(f"≤ {hi}")
    if field["default"] not in (None, "") and not isinstance(field["default"], str):
        bits.append(f"default {field['default']}")
    return " · ".join(b for b in bits if b)


def config_from_form(kind: str, values: list[Any]) -> Any:
    """The stage config from the form's values (in field order); raises ConfigError with the field named."""
    data = {}
    for f, v in zip(form_fields(kind), values, strict=True):
        if isinstance(v, str):
            v = v.strip()
        if v == "" and f["default"] is None:
            v = None
        data[f["name"]] = v
    return STAGES[kind].from_dict(data)


# ----------------------------------------------------------------------------- handlers


def launch_stage(ctx: AppContext, kind: str, *args: Any) -> tuple[str, int | None]:
    """Validate the form, create the run and start its worker. Returns (status line, run id or None)."""
    *values, request = args
    user = require(ctx, request, EDIT_ROLES)
    try:
        config = config_from_form(kind, values)
    except ConfigError as exc:
        return f"Error: {esc(exc)}", None
    db = ctx.db()
    try:
        run_id, proc = runs.start(db, ctx.db_path, config)
    except (LookupError, ValueError) as exc:
        return f"Error: {esc(exc)}", None
    threading.Thread(target=proc.wait, daemon=True).start()  # reap the worker when it ends
    runs.RunContext(db, run_id, config).log(f"launched from the dashboard by {user}")
    return f"Started {esc(STAGE_LABELS.get(kind, kind))} as run #{run_id}", run_id


def list_view(ctx: AppContext, request: gr.Request) -> pd.DataFrame:
    require(ctx, request, BROWSE_ROLES)
    return runs_frame(runs.list_runs(ctx.db(), limit=50))


def run_detail(ctx: AppContext, run_id: float | None, request: gr.Request) -> tuple[str, str, str]:
    """(summary HTML, log tail, config JSON) of one run."""
    require(ctx, request, BROWSE_ROLES)
    if not run_id:
        return "<p>Select a run in the table.</p>", "", ""
    try:
        r = runs.get_run(ctx.db(), int(run_id))
    except runs.RunError as exc:
        return f"<p>{esc(exc)}</p>", "", ""
    done, total = r["done"] or 0, r["total"] or 0
    progress = f'<progress max="{max(total, 1)}" value="{done}" style="width:100%"></progress>' if total else ""
    parts = [
        f"<h4>Run #{r['id']} · {esc(r['kind'])} · <span id='run-status'>{esc(r['status'])}</span></h4>",
        progress,
        f"<p>{done}/{total} · {r['tokens_per_s'] or 0:.1f} tok/s"
        + (f" · ETA {eta_text(r['eta_s'])}" if r["status"] in runs.ACTIVE and r["eta_s"] else "") + "</p>",
    ]
    if r["error"]:
        parts.append(f'<div class="cai-text">{esc(r["error"])}</div>')
    if r["result"]:
        parts.append(f'<details><summary>Result</summary><div class="cai-text">{esc(json.dumps(r["result"], indent=1))}</div></details>')
    log = "\n".join(f"{(x['ts'] or '')[11:19]} {x['level']:5} {x['line']}" for x in runs.logs(ctx.db(), int(run_id), 40))
    return "".join(parts), log, json.dumps(r["config"], indent=2)


def cancel(ctx: AppContext, run_id: float | None, request: gr.Request) -> str:
    user = require(ctx, request, EDIT_ROLES)
    if not run_id:
        return "Error: Select a run first."
    try:
        runs.request_cancel(ctx.db(), int(run_id))
    except runs.RunError as exc:
        return f"Error: {esc(exc)}"
    ctx.db()["run_logs"].insert({"run_id": int(run_id), "ts": runs.store.now(), "level": "info",
                                 "line": f"cancel requested by {user}"})
    return f"Cancel requested for run #{int(run_id)}"


def resume(ctx: AppContext, run_id: float | None, request: gr.Request) -> str:
    require(ctx, request, EDIT_ROLES)
    if not run_id:
        return "Error: Select a run first."
    try:
        proc = runs.resume(ctx.db(), ctx.db_path, int(run_id))
    except runs.RunError as exc:
        return f"Error: {esc(exc)}"
    threading.Thread(target=proc.wait, daemon=True).start()
    return f"Resumed run #{int(run_id)}"


def model_choices(ctx: AppContext, request: gr.Request) -> list[Any]:
    """Fresh choices for every store-backed form field, then the lineage model list."""
    require(ctx, request, BROWSE_ROLES)
    db = ctx.db()
    cache: dict[str, list[tuple[str, str]]] = {}
    out = []
    for kind in STAGES:
        for f in form_fields(kind):
            ref = REFS.get(f["name"])
            if ref and not f.get("choices"):
                cache.setdefault(ref, ref_choices(db, ref))
                first = _first_red_team(db) if f["name"] == "prompts" else None
                out.append(gr.Dropdown(choices=cache[ref], value=first) if first else gr.Dropdown(choices=cache[ref]))
    models = [(f"{n} (#{i})", i) for i, n in db.execute("select id, name from models order by id desc").fetchall()]
    return [*out, gr.Dropdown(choices=models, value=models[0][1] if models else None)]


def lineage(ctx: AppContext, model_id: int | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not model_id:
        return "<p>Pick a model.</p>"
    return lineage_html(ctx.db(), int(model_id))


# ----------------------------------------------------------------------------- layout


def _input(kind: str, f: dict[str, Any], model: str = "default") -> gr.components.Component:
    """One form input; model fields whose default is "default" start at the app's --model instead."""
    name, default, info = f["name"], f["default"], describe(f)
    if default == "default" and name in ("model", "policy", "feedback_model"):
        default = model
    elem_id = f"{kind}-{name}"
    if f["type"] is bool:
        return gr.Checkbox(value=bool(default), label=name, info=info, elem_id=elem_id)
    if f.get("choices"):
        return gr.Dropdown(list(f["choices"]), value=default, label=name, info=info, elem_id=elem_id)
    value = "" if default is None else str(default)
    if name in REFS:
        return gr.Dropdown([(value, value)] if value else [], value=value, label=name, info=info,
                           allow_custom_value=True, elem_id=elem_id)
    return gr.Textbox(value=value, label=name, info=info, max_lines=1, elem_id=elem_id)


def _launcher(ctx: AppContext, kind: str, n_inputs: int):  # type: ignore[no-untyped-def]
    """A click handler for one stage's form: n inputs, then the request (Gradio injects it by annotation)."""

    def handler(*args: Any) -> tuple[str, int | None]:
        return launch_stage(ctx, kind, *args)

    handler.__signature__ = _signature(n_inputs)  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    return handler


def build(ctx: AppContext) -> None:
    ref_inputs: list[Any] = []
    with gr.Accordion("Launch a run (admin)", open=True):
        stage = gr.Dropdown([(v, k) for k, v in STAGE_LABELS.items() if k in STAGES], value="sl", label="Stage",
                            elem_id="stage")
        groups = {}
        launched = gr.Number(visible=False)
        status = gr.Markdown(elem_id="launch-status")
        for kind in STAGES:
            with gr.Group(visible=kind == "sl") as group:
                fields = form_fields(kind)
                inputs = []
                for i in range(0, len(fields), 3):
                    with gr.Row():
                        for f in fields[i : i + 3]:
                            comp = _input(kind, f, ctx.model)
                            inputs.append(comp)
                            if f["name"] in REFS and not f.get("choices"):
                                ref_inputs.append(comp)
                go = gr.Button(f"Launch {STAGE_LABELS.get(kind, kind)}", variant="primary",
                               elem_id=f"launch-{kind}")
                handler = _launcher(ctx, kind, len(inputs))
                go.click(handler, inputs, [status, launched])
            groups[kind] = group
        stage.change(lambda k: [gr.Group(visible=k == kind) for kind in groups], stage, list(groups.values()))

    gr.Markdown("### Runs")
    table = gr.Dataframe(runs_frame([]), interactive=False, wrap=True, max_height=360, elem_id="runs-table",
                         column_widths=["6%", "10%", "10%", "28%", "8%", "8%", "14%", "16%"])
    with gr.Row():
        selected = gr.Number(None, label="Run id", precision=0, scale=0, min_width=120, elem_id="run-id")
        cancel_btn = gr.Button("Cancel run", variant="stop", scale=0)
        resume_btn = gr.Button("Resume run", scale=0)
        action = gr.Markdown()
    summary = gr.HTML("<p>Select a run in the table.</p>", elem_id="run-summary")
    with gr.Row():
        log = gr.Textbox(label="Log (last 40 lines)", lines=10, max_lines=10, autoscroll=True, scale=3,
                         elem_id="run-log", elem_classes=["cai-mono"])
        config = gr.Code(label="Config", language="json", scale=2)
    with gr.Accordion("Model lineage", open=False):
        with gr.Row():
            lineage_model = gr.Dropdown([], label="Model", scale=2)
            lineage_btn = gr.Button("Show lineage", scale=0)
        lineage_view = gr.HTML()

    timer = gr.Timer(2.0)
    timer.tick(quietly(bind(list_view, ctx), 1), None, table, show_progress="hidden")
    timer.tick(quietly(bind(run_detail, ctx), 3), selected, [summary, log, config], show_progress="hidden")

    def pick(evt: gr.SelectData) -> int | None:
        return int(evt.row_value[0]) if evt.row_value else None

    table.select(pick, None, selected).then(bind(run_detail, ctx), selected, [summary, log, config])
    selected.submit(bind(run_detail, ctx), selected, [summary, log, config])
    launched.change(lambda r: r, launched, selected).then(bind(run_detail, ctx), selected, [summary, log, config])
    cancel_btn.click(bind(cancel, ctx), selected, action)
    resume_btn.click(bind(resume, ctx), selected, action)
    lineage_btn.click(bind(lineage, ctx), lineage_model, lineage_view)
    lineage_model.input(bind(lineage, ctx), lineage_model, lineage_view)
    on_page_load(bind(list_view, ctx), None, [table])
    on_page_load(bind(model_choices, ctx), None, [*ref_inputs, lineage_model])


def _signature(n: int):  # type: ignore[no-untyped-def]
    """A signature of n positional inputs plus `request: gr.Request`, so Gradio passes the request."""
    import inspect

    params = [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    return inspect.Signature(params)
