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
        "Home", "Constitution", "Chains", "Labels", "Dashboard", "Models", "Arena", "Experiments", "Pipeline"]
    assert [t[0] for t in ui_app.tabs_for("viewer")] == [
        "Home", "Constitution", "Chains", "Labels", "Dashboard", "Models", "Experiments", "Pipeline"]
    assert ui_app.tabs_for("rater") == []


def test_login_check_checks_the_users_table(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    check = ui_app.login_check(db_path)
    assert check("ada", "password1", "1.2.3.4").user["name"] == "ada"
    assert check("ada", "password2", "1.2.3.4").message == "Wrong name or password."
    assert check("nobody", "password1", "1.2.3.4").user is None


def test_header_escapes_the_user_name():
    assert '<b class="cai-user">&lt;i&gt;x&lt;/i&gt;</b> (viewer)' in ui_app.header_html("<i>x</i>", "viewer")
    assert 'Signed in as <b class="cai-user"></b> (admin)' in ui_app.header_html(None, "admin")  # filled by JS


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
    assert paths["admin"] == [("", "Home"), ("constitution", "Constitution"), ("chains", "Chains"), ("labels", "Labels"), ("dashboard", "Dashboard"),
                              ("models", "Models"), ("campaigns", "Arena"), ("experiments", "Experiments"),
                              ("pipeline", "Pipeline")]
    assert paths["viewer"] == [p for p in paths["admin"] if p[0] != "campaigns"]
    with pytest.raises(ValueError, match="role 'rater' has no workbench page"):
        ui_app.build_app(db_path, "tiny", "rater")


def test_each_page_carries_only_its_own_components_and_a_header_that_needs_no_request(db_path):
    demo = ui_app.build_app(db_path, "tiny", "admin")
    config = demo.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    elem_ids = {page: {by_id[i]["props"].get("elem_id") for i in spec["components"]} - {None}
                for page, spec in config["page"].items()}
    assert "home-overview" in elem_ids[""] and "principles-table" not in elem_ids[""]  # the landing page is light
    assert "principles-table" in elem_ids["constitution"] and "runs-table" in elem_ids["dashboard"]
    assert "runs-table" not in elem_ids["constitution"] and "principles-table" not in elem_ids["dashboard"]
    assert "chains-table" in elem_ids["chains"] and elem_ids["chains"] & elem_ids["labels"] == {"cai-header"}
    assert "pipe-report" in elem_ids["pipeline"] and "pipe-report" not in elem_ids["experiments"]
    assert [by_id[i]["type"] for i in config["page"][""]["components"]].count("dataframe") == 0
    headers = [c for c in config["components"] if c["props"].get("elem_id") == "cai-header"]
    assert len(headers) == len(config["page"]) == 9
    for header in headers:  # the role is in the page; the name comes from the page's config, in the browser
        assert header["props"]["js_on_load"] == ui_app.HEADER_JS
        assert 'Signed in as <b class="cai-user"></b> (admin)' in header["props"]["value"]
    outputs = {o for dep in config["dependencies"] for o in dep["outputs"]}
    assert not outputs & {h["id"] for h in headers}  # no event fills it


def test_calm_queue_polls_less_often(db_path):
    demo = ui_app.calm_queue(ui_app.build_app(db_path, "tiny").queue())
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.02, 0.1)


def test_home_overview_links_each_page_escapes_names_and_hides_the_arena_from_viewers():
    import re

    from ui import home

    glance = {
        "constitutions": [{"name": "paper", "version": 2, "critique": 1, "comparison": 3, "enabled": 3,
                           "principles": 4}],
        "models": ["tiny", "<b>x</b>"],
        "runs": {"active": [{"id": 7, "kind": "sl", "status": "running", "done": 3, "total": 10,
                             "phase": "chain 4 of 10: critique 1"}], "by_status": {"done": 2, "failed": 1, "running": 1}},
        "chains": {"total": 1, "flagged": 0},
        "prefs": {"human": 1, "ai": 2},
        "done": {"sl": 2, "agreement": 1},
        "campaigns": 1, "votes": 5, "experiments": 0,
    }
    rows = re.findall(r'<th><a href="([^"]+)">([^<]+)</a></th><td>(.*?)</td>', home.glance_html(glance, "admin"))
    assert rows == [
        ("/constitution", "Constitution", "constitution <b>paper</b> v2: 1 critique principle, 3 comparison principles "
                                          "(3 of 4 enabled)"),
        ("/models", "Models", "2 models registered: tiny, &lt;b&gt;x&lt;/b&gt;"),
        ("/dashboard", "Dashboard", "runs: sl #7 running (3/10, chain 4 of 10: critique 1), 2 done, 1 failed"),
        ("/chains", "Chains", "1 critique → revision chain, 0 flagged"),
        ("/labels", "Labels", "1 human preference set, 2 AI label sets, 1 agreement run"),
        ("/campaigns", "Arena", "1 campaign, 5 votes"),
        ("/experiments", "Experiments", "0 constitution experiments"),
        ("/pipeline", "Pipeline", "0 finished pipelines: the whole method in one run, and the paper's figures on it"),
    ]
    viewer = home.glance_html(glance, "viewer")
    assert 'href="/campaigns"' not in viewer and 'href="/experiments"' in viewer
    assert ('<p id="home-next"><b>Next:</b> Run “Response pairs (sample two answers)”: two answers per prompt for '
            'the feedback model to compare. <a href="/dashboard">Dashboard →</a></p>') in viewer


def test_no_table_starts_with_placeholder_headers(db_path):
    """An empty gr.Dataframe shows Gradio's "1 2 3" headers; every table names its columns from the start."""
    for role in ("admin", "viewer"):
        config = ui_app.build_app(db_path, "tiny", role).get_config_file()
        tables = [c["props"] for c in config["components"] if c["type"] == "dataframe"]
        assert len(tables) == (19 if role == "admin" else 13)
        for props in tables:
            headers = (props.get("value") or {}).get("headers") or []
            assert headers and not any(h.isdigit() for h in map(str, headers)), props.get("label")


def test_landing_assets_learns_the_static_files_a_landing_page_loads():
    la = ui_app.LandingAssets(window_s=10)
    la.observe("/assets/a.js", "t1", 0.0, page_load=False)  # before its landing page: not learnt
    la.observe("/", "t1", 1.0)
    la.observe("/assets/a.js", "t1", 1.5, page_load=False)
    la.observe("/gradio_api/heartbeat/x", "t1", 1.6, page_load=False)  # API calls leave the window open
    la.observe("/static/fonts/f.woff2", "t1", 2.0, page_load=False)
    la.observe("/assets/a.js", "t1", 2.1, page_load=False)  # once
    la.observe("/assets/b.js", "t2", 2.0, page_load=False)  # a session with no landing page open
    la.observe("/assets/b.js", None, 2.0, page_load=False)  # no session
    la.observe("/labels", "t1", 3.0)  # another page: its files are not the landing page's
    la.observe("/assets/plotly.js", "t1", 3.5, page_load=False)
    la.observe("/arena/", "t3", 4.0)
    la.observe("/arena/assets/late.js", "t3", 14.5, page_load=False)  # after the window
    la.observe("/arena/assets/c.js", "t3", 5.0, page_load=False)
    assert la.files == {"/": {"/assets/a.js": None, "/static/fonts/f.woff2": None},
                        "/arena/": {"/arena/assets/c.js": None}}
    assert la.links() == ('<link rel="prefetch" href="/assets/a.js"><link rel="prefetch" href="/static/fonts/f.woff2">'
                          '<link rel="prefetch" href="/arena/assets/c.js">')
    capped = ui_app.LandingAssets(cap=1)
    capped.observe("/", "t", 0.0)
    for name in ("x", "y"):
        capped.observe(f"/assets/{name}.js", "t", 0.5, page_load=False)
    assert capped.files["/"] == {"/assets/x.js": None}
