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


def test_build_app_gives_each_role_its_pages(db_path):
    paths = {}
    for role in ("admin", "viewer"):
        demo = ui_app.build_app(db_path, "tiny", role)
        assert isinstance(demo, gr.Blocks)
        paths[role] = [(path, name) for path, name, _ in demo.pages]
    assert paths["admin"] == [("", "Home"), ("chains", "Chains"), ("labels", "Labels"), ("dashboard", "Dashboard"),
                              ("models", "Models"), ("campaigns", "Arena"), ("experiments", "Experiments")]
    assert paths["viewer"] == [p for p in paths["admin"] if p[0] != "campaigns"]
    with pytest.raises(ValueError, match="role 'rater' has no workbench page"):
        ui_app.build_app(db_path, "tiny", "rater")


def test_each_page_carries_only_its_own_components_and_fills_its_header_first(db_path):
    demo = ui_app.build_app(db_path, "tiny", "admin")
    config = demo.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    elem_ids = {page: {by_id[i]["props"].get("elem_id") for i in spec["components"]} - {None}
                for page, spec in config["page"].items()}
    assert "principles-table" in elem_ids[""] and "runs-table" in elem_ids["dashboard"]
    assert "runs-table" not in elem_ids[""] and "principles-table" not in elem_ids["dashboard"]
    assert "chains-table" in elem_ids["chains"] and not elem_ids["chains"] & elem_ids["labels"]
    for page, spec in config["page"].items():
        first = demo.fns[min(spec["dependencies"])]
        assert first.name == "on_load" and [t[1] for t in first.targets] == ["load"], page


def test_calm_queue_polls_less_often(db_path):
    demo = ui_app.calm_queue(ui_app.build_app(db_path, "tiny").queue())
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.02, 0.1)
