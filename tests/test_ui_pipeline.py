"""Pipeline page handlers without a browser: recipe pick and check, the command line, launch refusals, rendering."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from cai import users
from cai.cli import main
from ui import pipeline as page
from ui.common import AppContext


@pytest.fixture
def ctx(db_path):
    assert main(["init", "--db", str(db_path)]) == 0
    context = AppContext(db_path=db_path, model="tiny")
    users.add_user(context.db(), "ada", "admin", "password1")
    users.add_user(context.db(), "vic", "viewer", "password1")
    return context


def req(name):
    return SimpleNamespace(username=name)


def test_shipped_recipes_and_the_command_line_a_launch_equals():
    assert page.shipped() == ["cpu-small", "paper", "smoke"]
    text, line = page.pick("smoke")
    assert text.startswith("# Every stage of the method on the tiny") and line == "cai pipeline run smoke"
    assert page.command_line("smoke", text, ["sl.limit=2", "policy=my model"]) == (
        "cai pipeline run smoke --set sl.limit=2 --set 'policy=my model'")
    assert page.command_line("smoke", text + "\n# edited", []) == "cai pipeline run my-recipe.yaml"
    assert page.command_line("smoke", text.rstrip(), []) == "cai pipeline run smoke"  # as the code editor sends it
    assert page.pick("nope") == ("", "cai pipeline run my-recipe.yaml")


def test_check_shows_the_resolved_recipe_and_refuses_a_wrong_one(ctx):
    resolved, line = page.preview(ctx, "smoke", page.recipe_text("smoke"), "sl.limit=2", req("vic"))
    assert "constitution: default@1" in resolved and "limit: 2" in resolved
    assert line == "`cai pipeline run smoke --set sl.limit=2`"
    with pytest.raises(gr.Error, match=r"stages.sl: unknown field\(s\) revison"):
        page.preview(ctx, "smoke", page.recipe_text("smoke"), "sl.revison=2", req("vic"))
    with pytest.raises(gr.Error, match="not valid YAML"):
        page.preview(ctx, "smoke", "stages: [", "", req("vic"))


def test_only_admins_launch_and_nothing_is_created_for_a_bad_recipe(ctx):
    with pytest.raises(gr.Error, match="needs the admin role"):
        page.launch(ctx, "smoke", page.recipe_text("smoke"), "", req("vic"))
    with pytest.raises(gr.Error, match="stages.scores needs stage pm"):
        page.launch(ctx, "smoke", page.recipe_text("smoke"), "stages.pm.skip=true", req("ada"))
    assert ctx.db()["runs"].count == 0
    assert page.show(ctx, None, req("vic")) == ("<p>No pipeline yet: launch one above.</p>", "")


def test_stage_table_and_report_escape_and_show_each_verdict():
    shown = {"id": 3, "name": "<b>x</b>", "status": "running", "error": None, "stages": [
        {"stage": "sl", "kind": "sl", "run_id": 4, "status": "done", "done": 2, "total": 2, "output": 4},
        {"stage": "sft", "kind": "sft", "run_id": None, "status": "not started", "done": 0, "total": 0}]}
    html = page.stages_html(shown)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<td>#4</td>" in html and "<td>not started</td>" in html
    figure = {"claim": "c <i>", "measured": {}, "verdict": "not enough data", "runs": [], "why": "no pm stage"}
    report = {k: figure for k in ("pm", "fig2", "fig4", "fig5", "fig8", "fig10", "goodhart")}
    out = page.report_html(report)
    assert out.count("not enough data") == 7 and "c &lt;i&gt;" in out and "no pm stage" in out
    assert "pipe-note" not in out  # an unmeasured figure's reason is its headline, not a note
    fig8 = {"claim": "c", "verdict": "not enough data", "runs": [8], "why": "a <why>", "measured": {
        "curve": [], "last_minus_first": {"delta": 0.1, "ci": [-0.2, 0.3], "n": [4, 4], "steps": [1, 1]}}}
    out = page.report_html({"fig8": fig8})
    assert ("<br><small class='pipe-note'>the 95 % interval contains 0, so these data cannot tell</small>"
            "<br><small class='pipe-note'>a &lt;why&gt;</small></td>") in out
