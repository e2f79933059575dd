"""Dashboard handlers: forms from the config dataclasses, inline validation, runs, cancel/resume, lineage."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import constitution, data, models, runs, users
from cai.config import PMConfig, RLConfig, SFTConfig, SLConfig
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
    for kind in D.STAGE_LABELS:
        for f in D.form_fields(kind):
            assert f["help"], f"{kind}.{f['name']} has no help text"
    revisions = next(f for f in D.form_fields("sl") if f["name"] == "revisions")
    assert D.describe(revisions) == (
        "Critique -> revision rounds per prompt (paper: 4). · 0 to 8 · default 4 · field revisions")
    assert revisions["label"] == "Revision rounds"
    for kind in D.STAGE_LABELS:  # every field has a readable label, not its raw name
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
    sft_run = runs.create_run(db, SFTConfig(chains=sl_run, model="tiny"))
    base = models.ensure_model(db, "tiny")["id"]
    sft = models.register_model(db, "sft-1", "/m/sft", parent_id=base, run_id=sft_run)
    from cai.config import LabelConfig, PairsConfig

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
