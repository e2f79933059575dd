"""One page per role (issue #13 item 1), against the running app (`ui.app.server` under uvicorn): each role
gets only its page; a page a role may not use is not sent to it at all (page, `/config`, API info, queue,
upload); and nothing a rater can open names a model before the battle ends."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import httpx
import pytest

from cai import arena, models, store, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from tests.helpers import BUDGET_S, serve_app

NAMES = ["quokka-7b", "wombat-3b"]
ANSWERS = {"quokka-7b": " Paris is the capital.", "wombat-3b": " The capital is Paris."}
ACCOUNTS = {"ada": "admin", "vera": "viewer", "rita": "rater"}
PASSWORD = "password1"
# Labels only the admin's Arena tab has; the viewer's page must carry none of them.
ARENA_ADMIN_LABELS = {"New campaign name", "Invite links to make", "Bootstrap rounds", "Days until they expire"}



@pytest.fixture(scope="module")
def running(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("pages") / "workbench.db"
    db = store.connect(db_path)
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    for name, role in ACCOUNTS.items():
        users.add_user(db, name, role, PASSWORD)
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: ANSWERS[n]))
    with serve_app(db_path, pool) as url:
        yield url, db_path


@contextlib.contextmanager
def signed_in(url: str, name: str | None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=BUDGET_S) as client:
        if name is not None:
            resp = client.post("/login", data={"username": name, "password": PASSWORD})
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"success": True, "home": "/arena/" if ACCOUNTS[name] == "rater" else "/"}
        yield client


def labels(config: dict) -> set[str]:
    return {c["props"].get("label") for c in config["components"] if c["props"].get("label")}


def test_admin_and_viewer_each_get_their_own_workbench(running):
    url, _ = running
    got = {}
    for name in ("ada", "vera"):
        with signed_in(url, name) as c:
            assert c.get("/").status_code == 200
            config = c.get("/config").json()
            info = c.get("/gradio_api/info").json()
            assert c.get("/dashboard").status_code == 200
            pages = [path for path, _, _ in config["pages"]]
            got[name] = (pages, labels(config), info)
            assert c.get("/campaigns").status_code == (200 if name == "ada" else 404)
    pages, admin_labels, _ = got["ada"]
    assert pages == ["", "constitution", "chains", "labels", "dashboard", "models", "campaigns", "experiments", "pipeline"]
    assert ARENA_ADMIN_LABELS <= admin_labels
    pages, viewer_labels, viewer_info = got["vera"]
    assert pages == ["", "constitution", "chains", "labels", "dashboard", "models", "experiments", "pipeline"]
    assert not ARENA_ADMIN_LABELS & viewer_labels
    assert "Model A" not in viewer_labels and "Model A" not in admin_labels  # no battle copy in the workbench
    endpoints = set(viewer_info["named_endpoints"]) | set(viewer_info["unnamed_endpoints"])
    assert not {"/start", "/send", "/vote", "/end", "/sign_in", "/join"} & endpoints


@pytest.mark.parametrize("name", ["rita", None])
def test_the_workbench_is_not_sent_to_a_rater_or_a_visitor(running, name):
    url, _ = running
    with signed_in(url, name) as c:
        home = c.get("/")
        assert (home.status_code, home.headers["location"]) == (303, "/arena/" if name else "/login")
        assert home.content == b""
        for path in ("/config", "/constitution", "/dashboard", "/campaigns", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/login_check",
                     "/theme.css", "/gradio_api/queue/data?session_hash=x"):
            resp = c.get(path)
            assert resp.status_code == 401, path
            assert "Constitution" not in resp.text
        assert c.post("/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"}).status_code == 401
        assert c.post("/gradio_api/upload", files={"files": ("x.bin", b"x")}).status_code == 401
        assert c.get("/arena/").status_code == 200  # the rater page is open to all (it has its own sign-in)


def test_log_out_ends_the_session_and_sign_in_shows_why_it_failed(running):
    url, _ = running
    with signed_in(url, "vera") as c:
        assert c.get("/login").status_code == 303  # already signed in: sent to the page
        assert c.get("/logout").status_code == 200 and c.get("/config").status_code == 200  # a GET ends nothing
        assert c.post("/logout").headers["location"] == "/login"
        assert c.get("/config").status_code == 401
        page = c.get("/login")
        assert page.status_code == 200 and 'for="username">username' in page.text and ">Login</button>" in page.text
        bad = c.post("/login", data={"username": "vera", "password": "<b>nope</b>"})
        assert (bad.status_code, bad.json()) == (400, {"detail": "Wrong name or password."})


def test_nothing_on_any_page_a_rater_can_open_names_a_model_before_the_battle_ends(running):
    from gradio_client import Client

    url, _ = running
    received: list[str] = []
    with signed_in(url, "rita") as http:
        token = http.cookies["cai-session"]
        for path in ("/", "/login", "/config", "/gradio_api/info", "/arena/", "/arena/config",
                     "/arena/gradio_api/info", "/logout"):
            resp = http.get(path)
            assert resp.status_code in (200, 303, 401), path
            received.append(resp.text + json.dumps(dict(resp.headers)))
    client = Client(f"{url}/arena/", verbose=False, headers={"Cookie": f"cai-session={token}"},
                    httpx_kwargs={"timeout": BUDGET_S})
    received.append(json.dumps(client.view_api(print_info=False, return_format="dict")))
    received.append(json.dumps(client.predict("rita", PASSWORD, api_name="/sign_in")))
    received.append(json.dumps(client.predict("help", api_name="/start")))
    job = client.submit("What is the capital of France?", api_name="/send")
    job.result()
    received += [json.dumps(o) for o in job.outputs()]  # every streamed update
    received.append(json.dumps(client.predict("Tie", "", api_name="/vote")))
    blob = "\n".join(received)
    assert "Paris is the capital." in blob and "The capital is Paris." in blob  # the answers did arrive
    for name in NAMES:
        assert name not in blob
    reveal = client.predict(api_name="/end")[1]
    assert all(name in reveal for name in NAMES)
    client.close()


def test_the_sign_in_page_prefetches_the_files_landing_pages_load(running):
    import re

    url, _ = running
    with signed_in(url, "ada") as c:
        page = c.get("/", headers={"sec-fetch-dest": "document"}).text
        entry = re.search(r'src="\./assets/(index-[\w-]+\.js)"', page).group(1)
        assert c.get(f"/assets/{entry}", headers={"sec-fetch-dest": "script"}).status_code == 200
    with httpx.Client(base_url=url, timeout=BUDGET_S) as visitor:
        assert f'<link rel="prefetch" href="/assets/{entry}">' in visitor.get("/login").text
        assert visitor.get(f"/assets/{entry}").status_code == 200  # Gradio's build is public, as in Gradio
        assert visitor.get("/config").status_code == 401  # the pages are not
