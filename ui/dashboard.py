"""Dashboard tab: launch any stage from a form built from its config dataclass, watch runs, cancel, resume.

Forms come from `cai.stages.REGISTRY` + `fields_help` (defaults and help shown); a submission goes through
`from_dict`, so an invalid value comes back inline as the ConfigError's message, and `cai.runs.start`
runs it in a worker process. The run list refreshes itself with a gr.Timer; lineage is read off the store.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
from typing import Any

import gradio as gr
import pandas as pd
from sqlite_utils import Database

from cai import models, runs
from cai.backends.builtin import EMBEDDED, POLICY_DEFAULT, ROLES
from cai.config import ConfigError, StageConfig, fields_help, required
from cai.queries import catalog
from cai.queries import runs as run_queries
from cai.refs import missing_references
from cai.stages import REGISTRY
from cai.train import lengths
from ui.common import (
    BROWSE_ROLES,
    EDIT_ROLES,
    AppContext,
    bind,
    esc,
    on_page_load,
    quietly,
    read_upload,
    require,
)
from ui.lineage import lineage_html

RUN_COLUMNS = ["id", "kind", "status", "progress", "tok/s", "ETA", "started", "note"]
EMPTY_RUNS = ("No runs yet: pick a stage above and press Launch (the CLI equivalent is shown under each form), "
              "or `cai run sl --prompts sample-red-team --model tiny`.")
# The run list polls only while a run is active: every FAST_S while something changes, backing off to SLOW_S.
FAST_S, SLOW_S = 2.0, 30.0


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
        s = runs.shown(r)
        out.append({
            "id": r["id"],
            "kind": r["kind"],
            "status": s["status"],
            "progress": progress_text(r),
            "tok/s": f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] else "",
            "ETA": eta_text(s["eta_s"]),
            "started": (r["started_at"] or r["created_at"] or "")[:19].replace("T", " "),
            "note": (r["error"] or "")[:80],
        })
    return pd.DataFrame(out, columns=RUN_COLUMNS)


def progress_text(run: dict[str, Any]) -> str:
    """Items done; while a run with step-level progress is active, the bar follows its steps instead. The
    numbers are `cai.runs.shown`'s, as on the run page and in `cai runs show`."""
    s = runs.shown(run)
    if s["steps_total"]:
        return f"{bar(s['steps_done'], s['steps_total'])} steps · {s['done']}/{s['total']} done"
    return bar(s["done"], s["total"])


def shown_status(run: dict[str, Any]) -> str:
    """The status every view shows (`cai.runs.shown`): a cancel shows at once as "cancelling…"."""
    return str(runs.shown(run)["status"])


def next_interval(active: bool, changed: bool, current: float) -> float | None:
    """The run list's next poll: none while no run is active; FAST_S after a change, else twice as long."""
    if not active:
        return None
    return FAST_S if changed else min(max(current, FAST_S) * 2, SLOW_S)


# Model fields that take a reward (preference) model; every other model field takes a policy (cai.models.KINDS).
REWARD_FIELDS = ("reward_model", "pm")


def field_role(field: dict[str, Any]) -> str | None:
    """Which kind of model a form field takes ("policy" or "reward"); None for fields that name no model."""
    if field.get("ref") != "models":
        return None
    return "reward" if field["name"] in REWARD_FIELDS else "policy"


def ref_choices(db: Database, ref: str, role: str | None = None) -> list[tuple[str, str]]:
    """What a store-backed field offers; model fields offer only models of `role` (None: every model)."""
    if ref == "prompt_sets":
        return [(f"{r['name']} ({r['kind']}, {r['prompts']})", r["name"]) for r in catalog.prompt_sets(db)]
    if ref == "models":
        names = dict.fromkeys([*EMBEDDED, "default", "tiny", *catalog.model_names(db)])
        return [(models.choice_label(db, n), n) for n in names if role is None or models.model_kind(db, n) == role]
    if ref == "constitutions":
        return [("(most recent constitution)", "")] + [
            (f"constitution {r['name']} (latest v{r['latest']})", r["name"]) for r in catalog.constitutions_latest(db)]
    if ref == "prefs":
        return [("(none)", "")] + [(f"{r['name']} ({r['source']}, {r['kind']})", r["name"])
                                   for r in catalog.pref_sets(db)]
    kind = ref.split(":", 1)[1]
    return [(f"#{r['id']} ({r['status']})", str(r["id"])) for r in run_queries.runs_of_kind(db, kind, 200)]


def form_fields(kind: str) -> list[dict[str, Any]]:
    return fields_help(REGISTRY[kind].config)


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
    bits.append(f"field {field['name']}")
    return " · ".join(b for b in bits if b)


def config_from_form(kind: str, values: list[Any]) -> Any:
    """The stage config from the form's values (in field order); raises ConfigError with the field named.

    An empty box means "unset": the field keeps its default (None where it is optional), never 0. A
    required reference left empty is refused with what to do, before any other check.
    """
    data = {}
    needed = required(REGISTRY[kind].config)
    for f, v in zip(form_fields(kind), values, strict=True):
        if isinstance(v, str):
            v = v.strip()
        if v is None or v == "":
            if f["name"] in needed and f["name"] != "prompts":  # prompts: the config's own message
                raise ConfigError(f"{f['name']}: {needed[f['name']]}")
            continue
        data[f["name"]] = v
    return REGISTRY[kind].config.from_dict(data)


def form_values(kind: str, config: dict[str, Any]) -> list[Any]:
    """What each input of a stage's form shows for a stored config (the inverse of config_from_form)."""
    out = []
    for f in form_fields(kind):
        v = config.get(f["name"], f["default"])
        out.append(bool(v) if f["type"] is bool else "" if v is None else str(v) if f.get("ref") or
                   not f.get("choices") else v)
    return out


def cli_command(config: StageConfig, db_path: Any = None) -> str:
    """The `cai run` command line that makes the same run as the form (only fields that differ from defaults)."""
    parts = ["cai", "run", config.kind]
    if db_path:
        parts += ["--db", str(db_path)]
    defaults = {f["name"]: f["default"] for f in form_fields(config.kind)}
    for name, value in config.to_dict().items():
        if value == defaults[name] or (value is None and defaults[name] is None):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def made_html(db: Database, run: dict[str, Any]) -> str:
    """What a finished run made, and where to look at it."""
    rid, kind = run["id"], run["kind"]
    bits = []
    made = run_queries.run_outputs(db, rid)
    if kind == "sl":
        bits.append(f"{made['chains']} chains: Chains tab, run #{rid}")
    if kind == "pairs":
        bits.append(f"{made['response_pairs']} response pairs: use run #{rid} in an “AI labels” run")
    for name in made["pref_sets"]:
        bits.append(f"preference set {esc(name)}: Labels tab, “AI preference sets”")
    for name in made["models"]:
        bits.append(f"model {esc(name)}: Models tab (chat with it) and Model lineage below")
    if kind in ("agreement", "hhh"):
        bits.append("figures: Labels tab")
    if kind == "revision-scores":
        bits.append(f"scores per revision: Chains tab, run #{run['config'].get('run')}")
    ratings = ""
    if kind == "compare" and run["result"]:
        from cai.stages.compare import rating_lines

        bits.append("ratings below; “Arena campaigns from compare run” lets humans check them")
        ratings = f"<pre id='compare-ratings' class='cai-mono'>{esc(chr(10).join(rating_lines(run['result'])))}</pre>"
    return (("<p id='run-made'><b>Made:</b> " + " · ".join(bits) + "</p>") if bits else "") + ratings


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
    problems = missing_references(db, config)
    if problems:
        return "Error: " + esc("; ".join(problems)), None
    try:
        run_id, proc = runs.start(db, ctx.db_path, config)
    except (LookupError, ValueError) as exc:
        return f"Error: {esc(exc)}", None
    threading.Thread(target=proc.wait, daemon=True).start()  # reap the worker when it ends
    runs.RunContext(db, run_id, config).log(f"{LAUNCHED_BY}{user}")
    return f"Started {esc(REGISTRY[kind].label)} as run #{run_id}", run_id


def list_view(ctx: AppContext, request: gr.Request) -> pd.DataFrame:
    require(ctx, request, BROWSE_ROLES)
    return runs_frame(runs.list_runs(ctx.db(), limit=50))


def poll(ctx: AppContext, last: str, interval: float, request: gr.Request) -> tuple[Any, str, float, Any, str]:
    """One timer tick: the run list (skipped when unchanged), its signature, the next interval and the timer.

    The timer stops when no run is active, so an idle dashboard costs the server and the browser nothing.
    """
    frame = list_view(ctx, request)
    sig = hashlib.sha1(frame.to_json().encode()).hexdigest()
    active = bool(len(frame)) and frame["status"].isin([*runs.ACTIVE, "cancelling…"]).any()
    nxt = next_interval(bool(active), sig != last, interval)
    timer = gr.Timer(value=nxt or FAST_S, active=nxt is not None)
    empty = "" if len(frame) else EMPTY_RUNS
    return (frame if sig != last else gr.skip()), sig, nxt or FAST_S, timer, empty


def wake() -> tuple[Any, float, str]:
    """After a launch, resume or cancel: poll fast again (and force the next tick to redraw)."""
    return gr.Timer(value=FAST_S, active=True), FAST_S, ""


def run_detail(ctx: AppContext, run_id: float | None, request: gr.Request) -> tuple[str, str, str]:
    """(summary HTML, log tail, config JSON) of one run."""
    require(ctx, request, BROWSE_ROLES)
    if not run_id:
        return "<p>Select a run in the table.</p>", "", ""
    try:
        r = runs.get_run(ctx.db(), int(run_id))
    except runs.RunError as exc:
        return f"<p>{esc(exc)}</p>", "", ""
    s = runs.shown(r)  # the one status source: the list and `cai runs show` read the same
    active = s["active"]
    p_done, p_total = (s["steps_done"], s["steps_total"]) if s["steps_total"] else (s["done"], s["total"])
    progress = f'<progress max="{max(p_total, 1)}" value="{p_done}" style="width:100%"></progress>' if p_total else ""
    parts = [
        f"<h4>Run #{r['id']} · {esc(r['kind'])} · <span id='run-status'>{esc(s['status'])}</span></h4>",
        progress,
        f"<p id='run-progress'>{esc(s['text'])}"
        + (f" · now: {esc(s['phase'])}" if s["phase"] else "")
        + f" · {r['tokens_per_s'] or 0:.1f} tok/s"
        + (f" · ETA {eta_text(s['eta_s'])}" if active and s["eta_s"] else "") + "</p>",
        pinned_html(r),
    ]
    if r["status"] == "running" and r.get("cancel_requested"):
        parts.append("<p><b>Cancelling…</b> the worker stops at its next check (between batches, or within a "
                     "generation on the transformers backend).</p>")
    if r["status"] == "done":
        parts.append(made_html(ctx.db(), r))
    if r["error"]:
        parts.append(f'<div class="cai-text">{esc(r["error"])}</div>')
    parts.append(data_html(r["result"] or {}))
    if r["result"]:
        parts.append(f'<details><summary>Result</summary><div class="cai-text">{esc(json.dumps(r["result"], indent=1))}</div></details>')
    log = "\n".join(f"{(x['ts'] or '')[11:19]} {x['level']:5} {x['line']}" for x in runs.logs(ctx.db(), int(run_id), 40))
    return "".join(parts), log, json.dumps(r["config"], indent=2)


def data_html(result: dict[str, Any]) -> str:
    """A training run's rows: given, trained, cut or left out at max_length (cai.train.lengths)."""
    return f"<p>Training data: {esc(lengths.summary(result['data']))}</p>" if result.get("data") else ""


def pinned_html(run: dict[str, Any]) -> str:
    """What the run pinned when it was created: torch threads (reused on every resume) and its inputs."""
    pins = run.get("pinned") or {}
    bits = []
    if pins.get("threads"):
        bits.append(f"<span id='run-threads'>torch threads {int(pins['threads'])}</span>"
                    f" ({esc(pins.get('threads_why') or '')}; fixed for every resume)")
    for name, was in (pins.get("inputs") or {}).items():
        bits.append(f"{esc(name)}: {esc(was.get('file') or was.get('set'))} sha256 {esc(was['sha256'][:12])}…")
    return ("<p id='run-pinned'><b>Pinned at creation:</b> " + " · ".join(bits) + "</p>") if bits else ""


def campaigns_from_compare(ctx: AppContext, run_id: float | None, request: gr.Request) -> str:
    """Arena campaigns between a compare run's models on its prompts (cai.arena.compare), one per dimension."""
    from cai.arena.compare import from_compare

    user = require(ctx, request, EDIT_ROLES)
    if not run_id:
        return "Error: Select a compare run first."
    try:
        made = from_compare(ctx.db(), int(run_id), created_by=user)
    except ValueError as exc:
        return f"Error: {esc(exc)}"
    return "Made arena campaigns " + ", ".join(esc(c["name"]) for c in made) + ": raters find them on the Arena tab."


def cancel(ctx: AppContext, run_id: float | None, request: gr.Request) -> str:
    user = require(ctx, request, EDIT_ROLES)
    if not run_id:
        return "Error: Select a run first."
    try:
        runs.request_cancel(ctx.db(), int(run_id))
    except runs.RunError as exc:
        return f"Error: {esc(exc)}"
    run_queries.add_log(ctx.db(), int(run_id), f"cancel requested by {user}")
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


def refill(ctx: AppContext, run_id: float | None, request: gr.Request) -> list[Any]:
    """"Launch again with this config": the stage picker and every input of that stage's form, from the run."""
    require(ctx, request, EDIT_ROLES)
    if not run_id:
        raise gr.Error("Select a run first.")
    try:
        r = runs.get_run(ctx.db(), int(run_id))
    except runs.RunError as exc:
        raise gr.Error(str(exc)) from None
    return fill_forms(r["kind"], form_values(r["kind"], r["config"]))


def fill_forms(kind: str, values: list[Any]) -> list[Any]:
    """Updates for [stage picker, every input of every form]: `kind`'s inputs get `values`, the rest stay."""
    out: list[Any] = [kind]
    for k in REGISTRY:
        n = len(form_fields(k))
        out += values if k == kind else [gr.skip()] * n
    return out


def restore_last(saved: dict[str, Any] | None) -> list[Any]:
    """After a page load: the form of the stage last launched from this browser, with the values it used."""
    kind = (saved or {}).get("kind")
    values = (saved or {}).get("values")
    if kind not in REGISTRY or not isinstance(values, dict):
        return [gr.skip()] * (1 + sum(len(form_fields(k)) for k in REGISTRY))
    return fill_forms(kind, form_values(kind, values))


def generation_tokens(db: Database, config: StageConfig) -> tuple[int, str] | None:
    """At most how many tokens a generation stage asks its model for, and how that count is made; None for
    stages whose cost is not generation-bound (training, scoring)."""
    from cai import data

    def count(name: str, limit: int | None) -> int:
        try:
            n = int(data.get_prompt_set(db, name)["count"])
        except Exception:  # an unknown set: the launch itself says so
            return 0
        return min(n, limit) if limit else n

    c: Any = config
    if c.kind == "sl":
        n, per = count(c.prompts, c.limit), 1 + c.revisions * (1 if c.direct else 2)
        helpful = count(c.helpful_prompts, None) * c.helpful_samples if c.helpful_prompts else 0
        total = (n * per + helpful) * c.max_new_tokens
        how = f"{n} prompts × {per} generations" + (f" + {helpful} helpful samples" if helpful else "")
        return total, f"{how} × ≤{c.max_new_tokens} tokens"
    if c.kind == "pairs":
        n = count(c.prompts, c.limit)
        return n * 2 * c.max_new_tokens, f"{n} prompts × 2 responses × ≤{c.max_new_tokens} tokens"
    return None


def cost_text(db: Database, config: StageConfig) -> str:
    """What the form's setting costs on this machine: minutes from the tok/s measured for its model by earlier
    runs here (cai.models.measured_speed), and the model's loading phase with its ETA (cai.load_eta)."""
    from cai import load_eta
    from cai.config import subject_model

    name = subject_model(config)
    if not name:
        return ""
    row = models.get_model(db, name) or {"name": name, "path": name, "backend": "hf"}
    bits = []
    tokens = generation_tokens(db, config)
    speed = models.measured_speed(db, name)
    if tokens and speed:
        minutes = tokens[0] / speed / 60
        bits.append(f"at most ~{minutes:.0f} min on this machine ({tokens[1]} at {speed:.1f} tok/s, measured for "
                    f"{esc(name)} by earlier runs here)" if minutes >= 1 else
                    f"under a minute on this machine ({tokens[1]} at {speed:.1f} tok/s measured for {esc(name)})")
    elif tokens:
        bits.append(f"{tokens[1]}; no speed measured for {esc(name)} on this machine yet (a first small run, "
                    "e.g. with “Only the first N” = 2, measures it)")
    if load_eta.phase(row) == "convert":
        bits.append(load_eta.notice(row).rstrip("."))
    return ("**Cost:** " + "; ".join(bits) + ".") if bits else ""


def cost_line(ctx: AppContext, kind: str, *values: Any) -> str:
    """The cost line under a form as it stands ("" while the form is invalid: the command line says why)."""
    try:
        return cost_text(ctx.db(), config_from_form(kind, list(values)))
    except ConfigError:
        return ""


def hhh_upload(ctx: AppContext, path: str | None, request: gr.Request) -> tuple[Any, str]:
    """An uploaded HHH eval file, checked (every line a comparison in the paper's format) and kept in the
    workbench's folder under its content hash, so a run's pinned path always names these exact bytes.
    Returns (the form's file field, a status line)."""
    import shutil

    from cai.evals import hhh

    require(ctx, request, EDIT_ROLES)
    try:
        src = read_upload(path, allowed=(".jsonl",))
    except gr.Error as exc:
        return gr.skip(), f"Error: {esc(exc.message)}"
    try:
        n = len(hhh.read_hhh(src))
    except (ValueError, OSError) as exc:
        return gr.skip(), f"Error: {esc(str(exc).replace(str(src), src.name))}"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    dest = ctx.db_path.resolve().parent / "uploads" / f"hhh-{digest}.jsonl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return str(dest), f"Uploaded {esc(src.name)}: {n} comparisons, kept as `{esc(dest)}`."


def hhh_sample() -> tuple[str, str]:
    """The shipped sample file (12 comparisons in the paper's format) in the form's file field."""
    from cai.evals import hhh

    return str(hhh.SAMPLE), f"The sample file: {len(hhh.read_hhh(hhh.SAMPLE))} comparisons written for this project."


LAUNCHED_BY = "launched from the dashboard by "


def last_launch(ctx: AppContext, saved: dict[str, Any] | None, request: gr.Request) -> list[Any]:
    """After a page load: the form of the run this user last launched from the dashboard, as launched.

    The browser's saved form has the values as typed; it is used when it is of that same run. Otherwise (a
    reload that beat the browser's write of its storage, another browser, cleared storage) the run's stored
    config fills the form: the database, not the browser, says what was launched last."""
    user = require(ctx, request, EDIT_ROLES)
    row = ctx.db().execute(
        "select r.id, r.kind, r.config from runs r join run_logs l on l.run_id = r.id where l.line = ? "
        "order by r.id desc limit 1", [LAUNCHED_BY + user]).fetchone()
    if row is None or (saved or {}).get("run") == row[0]:
        return restore_last(saved)
    return restore_last({"kind": row[1], "values": json.loads(row[2] or "{}")})


def command_text(ctx: AppContext, kind: str, *values: Any) -> str:
    """The CLI line for the form as it stands, or what to fix first."""
    try:
        return cli_command(config_from_form(kind, list(values)), ctx.db_path)
    except ConfigError as exc:
        return f"# fix the form first: {exc}"


def model_choices(ctx: AppContext, request: gr.Request) -> list[Any]:
    """Fresh choices for every store-backed form field, then the lineage model list."""
    require(ctx, request, BROWSE_ROLES)
    return _choices(ctx, pick_first=True)


def fresh_choices(ctx: AppContext, request: gr.Request, all_models: bool = False) -> list[Any]:
    """As model_choices, keeping every field's value (after an import: the new set is offered at once)."""
    require(ctx, request, BROWSE_ROLES)
    return _choices(ctx, pick_first=False, all_models=all_models)


def every_model(ctx: AppContext, all_models: bool, request: gr.Request) -> list[Any]:
    """The "all models" escape hatch: model pickers offer every model, whatever its kind (or again by kind)."""
    return fresh_choices(ctx, request, bool(all_models))


def only_choice(field: dict[str, Any], choices: list[tuple[str, str]], needed: dict[str, str]) -> str | None:
    """The value to preselect in a required field that has exactly one real choice (else None)."""
    real = [v for _, v in choices if v]
    return real[0] if field["name"] in needed and len(real) == 1 else None


def _choices(ctx: AppContext, pick_first: bool, all_models: bool = False) -> list[Any]:
    db = ctx.db()
    cache: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    out = []
    for kind in REGISTRY:
        needed = required(REGISTRY[kind].config)
        for f in form_fields(kind):
            ref = f.get("ref")
            if ref and not f.get("choices"):
                key = (ref, None if all_models else field_role(f))
                choices = cache.setdefault(key, ref_choices(db, ref, key[1]))
                first = None
                if pick_first:
                    first = catalog.first_red_team_set(db) if f["name"] == "prompts" else None
                    first = first or only_choice(f, choices, needed)
                out.append(gr.Dropdown(choices=choices, value=first) if first else gr.Dropdown(choices=choices))
    models = [(f"{m['name']} (#{m['id']})", m["id"]) for m in catalog.models_newest_first(db)]
    lineage_pick = gr.Dropdown(choices=models, value=models[0][1] if models else None) if pick_first else \
        gr.Dropdown(choices=models)
    return [*out, lineage_pick]


def lineage(ctx: AppContext, model_id: int | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not model_id:
        return "<p>Pick a model.</p>"
    return lineage_html(ctx.db(), int(model_id))


# ----------------------------------------------------------------------------- layout


def _input(kind: str, f: dict[str, Any], model: str = POLICY_DEFAULT) -> gr.components.Component:
    """One form input, labelled in words (the config field's name is in its help line); model fields start at
    their role's default (policy or feedback model), or at the app's --model when it names another model."""
    name, default, info, label = f["name"], f["default"], describe(f), f["label"]
    if f.get("subject") and default in ROLES.values() and model != POLICY_DEFAULT:
        default = model
    elem_id = f"{kind}-{name}"
    if f["type"] is bool:
        return gr.Checkbox(value=bool(default), label=label, info=info, elem_id=elem_id)
    if f.get("choices"):
        return gr.Dropdown(list(f["choices"]), value=default, label=label, info=info, elem_id=elem_id)
    value = "" if default is None else str(default)
    if f.get("ref"):
        return gr.Dropdown([(value, value)] if value else [], value=value, label=label, info=info,
                           allow_custom_value=True, elem_id=elem_id)
    return gr.Textbox(value=value, label=label, info=info, max_lines=1, elem_id=elem_id)


def _launcher(ctx: AppContext, kind: str, n_inputs: int):  # type: ignore[no-untyped-def]
    """A click handler for one stage's form: n inputs, the browser's saved form, then the request (Gradio
    injects it by annotation). A launch remembers its values in the browser, so a reload keeps them."""

    def handler(*args: Any) -> tuple[str, int | None, Any]:
        *values, saved, request = args
        status, run_id = launch_stage(ctx, kind, *values, request)
        if run_id is None:
            return status, None, gr.skip()
        names = [f["name"] for f in form_fields(kind)]
        return status, run_id, {"kind": kind, "run": run_id, "values": dict(zip(names, values, strict=True))}

    handler.__signature__ = _signature(n_inputs + 1)  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    return handler


def _commander(ctx: AppContext, kind: str, n_inputs: int):  # type: ignore[no-untyped-def]
    def handler(*values: Any) -> tuple[str, str]:
        return command_text(ctx, kind, *values), cost_line(ctx, kind, *values)

    import inspect

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)])
    return handler


def build(ctx: AppContext) -> None:
    from ui.labels import import_block

    ref_inputs: list[Any] = []
    all_inputs: list[Any] = []
    secret = hashlib.sha1(f"cai-forms:{ctx.db_path}".encode()).hexdigest()
    saved = _top_level(lambda: gr.BrowserState({}, storage_key="cai-last-launch", secret=secret))
    with gr.Accordion("Launch a run (admin)", open=True):
        with gr.Row():
            stage = gr.Dropdown([(s.label, k) for k, s in REGISTRY.items()], value="sl", label="Stage",
                                elem_id="stage", scale=3)
            all_models = gr.Checkbox(False, label="All models in every model picker", scale=1, elem_id="all-models",
                                     info="By default a picker offers only models of its kind: policies (language "
                                          "models) or reward (preference) models.")
        groups = {}
        launched = gr.Number(visible=False)
        status = gr.Markdown(elem_id="launch-status")
        for kind in REGISTRY:
            with gr.Group(visible=kind == "sl") as group:
                fields = form_fields(kind)
                inputs = []
                for i in range(0, len(fields), 3):
                    with gr.Row():
                        for f in fields[i : i + 3]:
                            comp = _input(kind, f, ctx.model)
                            inputs.append(comp)
                            if f.get("ref") and not f.get("choices"):
                                ref_inputs.append(comp)
                if kind == "hhh":
                    _hhh_file(ctx, inputs[[f["name"] for f in fields].index("data")])
                command = gr.Code(command_text(ctx, kind, *[c.value for c in inputs]), language="shell",
                                  label="The same run from the command line", elem_id=f"cli-{kind}",
                                  interactive=False)
                go = gr.Button(f"Launch {REGISTRY[kind].label}", variant="primary",
                               elem_id=f"launch-{kind}")
                go.click(_launcher(ctx, kind, len(inputs)), [*inputs, saved], [status, launched, saved],
                         api_name=f"launch_{kind.replace('-', '_')}")
                cost = gr.Markdown(elem_id=f"cost-{kind}")
                gr.on([c.change for c in inputs], _commander(ctx, kind, len(inputs)), inputs, [command, cost],
                      show_progress="hidden", queue=False)
                all_inputs += inputs
            groups[kind] = group
        stage.change(lambda k: [gr.Group(visible=k == kind) for kind in groups], stage, list(groups.values()))
    with gr.Accordion("Import a preference set (for the AI vs human agreement eval)", open=False):
        imported, _ = import_block(ctx, "dash")

    gr.Markdown("### Runs")
    empty_note = gr.Markdown(elem_id="runs-empty")
    table = gr.Dataframe(runs_frame([]), interactive=False, wrap=True, max_height=360, elem_id="runs-table",
                         column_widths=["6%", "10%", "10%", "28%", "8%", "8%", "14%", "16%"])
    with gr.Row():
        selected = gr.Number(None, label="Run id", precision=0, scale=0, min_width=120, elem_id="run-id")
        cancel_btn = gr.Button("Cancel run", variant="stop", scale=0)
        resume_btn = gr.Button("Resume run", scale=0)
        again_btn = gr.Button("Launch again with this config", scale=0, elem_id="run-again")
        arena_btn = gr.Button("Arena campaigns from compare run", scale=0, elem_id="run-from-compare")
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

    # Polls only while a run is active (see `poll`); launches, resumes and cancels wake it.
    timer = gr.Timer(FAST_S, active=False)
    last_sig, interval = gr.State(""), gr.State(FAST_S)
    tick = timer.tick(quietly(bind(poll, ctx), 5), [last_sig, interval], [table, last_sig, interval, timer, empty_note],
                      show_progress="hidden")
    tick.then(quietly(bind(run_detail, ctx), 3), selected, [summary, log, config], show_progress="hidden")

    def pick(evt: gr.SelectData) -> int | None:
        return int(evt.row_value[0]) if evt.row_value else None

    detail = [summary, log, config]
    table.select(pick, None, selected).then(bind(run_detail, ctx), selected, detail)
    selected.submit(bind(run_detail, ctx), selected, detail)
    launched.change(lambda r: r, launched, selected).then(bind(run_detail, ctx), selected, detail).then(
        wake, None, [timer, interval, last_sig])
    cancel_btn.click(bind(cancel, ctx), selected, action).then(bind(run_detail, ctx), selected, detail).then(
        bind(list_view, ctx), None, table).then(wake, None, [timer, interval, last_sig])  # "cancelling…" at once
    resume_btn.click(bind(resume, ctx), selected, action).then(bind(run_detail, ctx), selected, detail).then(
        bind(list_view, ctx), None, table).then(wake, None, [timer, interval, last_sig])  # header and list at once
    again_btn.click(bind(refill, ctx), selected, [stage, *all_inputs]).then(
        lambda r: f"Form filled from run #{int(r)}: check it, then launch." if r else "", selected, action)
    arena_btn.click(bind(campaigns_from_compare, ctx), selected, action)
    lineage_btn.click(bind(lineage, ctx), lineage_model, lineage_view)
    lineage_model.input(bind(lineage, ctx), lineage_model, lineage_view)
    on_page_load(bind(poll, ctx), [last_sig, interval], [table, last_sig, interval, timer, empty_note])
    root = gr.context.Context.root_block
    assert root is not None
    refresh_refs = quietly(bind(model_choices, ctx), len(ref_inputs) + 1)
    root.load(refresh_refs, None, [*ref_inputs, lineage_model]).then(
        quietly(bind(last_launch, ctx), 1 + len(all_inputs)), saved, [stage, *all_inputs])
    imported.then(quietly(bind(fresh_choices, ctx), len(ref_inputs) + 1), None, [*ref_inputs, lineage_model])
    all_models.change(quietly(bind(every_model, ctx), len(ref_inputs) + 1), all_models, [*ref_inputs, lineage_model])


def _hhh_file(ctx: AppContext, data_box: Any) -> None:
    """Under the HHH form: upload a JSONL file (or take the sample) instead of typing a path on the server."""
    with gr.Row():
        upload = gr.File(label="Upload an HHH eval file (.jsonl: prompt, corrects, incorrects)", file_types=[".jsonl"],
                         type="filepath", elem_id="hhh-upload", scale=3)
        sample = gr.Button("Use the sample file (12 comparisons)", elem_id="hhh-sample", scale=1)
    note = gr.Markdown(elem_id="hhh-upload-status")
    upload.upload(bind(hhh_upload, ctx), upload, [data_box, note], api_name=False)
    sample.click(hhh_sample, None, [data_box, note], api_name=False)


def _top_level(make: Any) -> Any:
    """Create a component at the top of the page, outside this tab: the workbench starts hidden (until the
    role check), and a hidden BrowserState is not mounted in time to hand the page-load event its value."""
    root, here = gr.context.Context.root_block, gr.context.Context.block
    if root is None:
        return make()
    gr.context.Context.block = root
    try:
        return make()
    finally:
        gr.context.Context.block = here


def _signature(n: int):  # type: ignore[no-untyped-def]
    """A signature of n positional inputs plus `request: gr.Request`, so Gradio passes the request."""
    import inspect

    params = [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    return inspect.Signature(params)
