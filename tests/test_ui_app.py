"""The app frame: views by role, the login check, the whole Blocks builds, and app.py's first start."""

from __future__ import annotations

import gradio as gr

import app as app_module
from cai import constitution, data, users
from ui import app as ui_app


def test_view_for_roles():
    assert [ui_app.view_for(r) for r in ("admin", "viewer", "rater", None, "boss")] == [
        "workbench", "workbench", "arena", "none", "none"]


def test_auth_function_checks_the_users_table(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    check = ui_app.auth_function(db_path)
    assert check("ada", "password1") is True
    assert check("ada", "password2") is False
    assert check("nobody", "password1") is False


def test_header_escapes_the_user_name():
    assert "<b>&lt;i&gt;x&lt;/i&gt;</b> (viewer)" in ui_app.header_html("<i>x</i>", "viewer")


def test_prepare_seeds_and_creates_the_first_admin_once(tmp_path, monkeypatch):
    monkeypatch.delenv("CAI_ADMIN_PASSWORD", raising=False)
    path = tmp_path / "fresh.db"
    got_path, password = app_module.prepare(str(path))
    assert got_path == str(path) and password and len(password) >= 12
    from cai import store

    db = store.connect(path)
    assert users.authenticate(db, "admin", password)["role"] == "admin"
    assert constitution.resolve_version(db, "default")["version"] == 1
    assert [s["name"] for s in data.list_prompt_sets(db)] == ["sample-red-team", "sample-helpful"]
    assert [(s["name"], s["source"], s["count"]) for s in data.list_pref_sets(db)] == [
        ("sample-harmless-prefs", "human", 12)]  # the agreement eval can run on a fresh database
    assert {m["name"] for m in __import__("cai.models", fromlist=["x"]).list_models(db)} >= {"default", "tiny"}
    assert app_module.prepare(str(path)) == (str(path), None)  # second start: nothing new, nothing printed


def test_build_app_builds_every_tab(db_path):
    demo = ui_app.build_app(db_path, "tiny")
    assert isinstance(demo, gr.Blocks)
    labels = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert labels[:6] == ["Constitution", "Chains", "Labels", "Dashboard", "Models", "Arena"]


def test_calm_queue_polls_less_often(db_path):
    demo = ui_app.calm_queue(ui_app.build_app(db_path, "tiny").queue())
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.02, 0.1)
