"""The app frame: pages by role, the login check, each role's Blocks builds, and app.py's first start."""

from __future__ import annotations

import gradio as gr
import pytest

import app as app_module
from cai import constitution, data, users
from ui import app as ui_app


def test_home_and_tabs_for_roles():
    assert [ui_app.home_for(r) for r in ("admin", "viewer", "rater", None, "boss")] == [
        "/", "/", "/arena/", "/login", "/login"]
    assert [t[0] for t in ui_app.tabs_for("admin")] == [
        "Constitution", "Chains", "Labels", "Dashboard", "Models", "Arena", "Experiments"]
    assert [t[0] for t in ui_app.tabs_for("viewer")] == [
        "Constitution", "Chains", "Labels", "Dashboard", "Models", "Experiments"]
    assert ui_app.tabs_for("rater") == []


def test_login_check_checks_the_users_table(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    check = ui_app.login_check(db_path)
    assert check("ada", "password1", "1.2.3.4").user["name"] == "ada"
    assert check("ada", "password2", "1.2.3.4").message == "Wrong name or password."
    assert check("nobody", "password1", "1.2.3.4").user is None


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


def test_build_app_builds_the_tabs_of_each_role(db_path):
    labels = {}
    for role in ("admin", "viewer"):
        demo = ui_app.build_app(db_path, "tiny", role)
        assert isinstance(demo, gr.Blocks)
        labels[role] = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert labels["admin"][:7] == ["Constitution", "Chains", "Labels", "Dashboard", "Models", "Arena", "Experiments"]
    assert "Arena" not in labels["viewer"] and labels["viewer"][:6] == [
        "Constitution", "Chains", "Labels", "Dashboard", "Models", "Experiments"]
    with pytest.raises(ValueError, match="role 'rater' has no workbench page"):
        ui_app.build_app(db_path, "tiny", "rater")


def test_only_the_first_tab_fills_on_page_load_the_others_on_first_select(db_path):
    demo = ui_app.build_app(db_path, "tiny", "admin")
    tabs = {b._id: b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)}
    loads, selects = [], set()
    for fn in demo.fns.values():
        for block, event in fn.targets:
            if event == "load":
                loads.append(fn.name)
            elif event == "select" and block in tabs:
                selects.add(tabs[block])
    assert loads[0] == "on_load"  # the header first
    assert selects == {"Chains", "Labels", "Dashboard", "Models", "Arena", "Experiments"}
    assert "Constitution" not in selects


def test_calm_queue_polls_less_often(db_path):
    demo = ui_app.calm_queue(ui_app.build_app(db_path, "tiny").queue())
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.02, 0.1)
