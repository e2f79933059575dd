"""Replays the adversarial probe of issue #17 (items 1, 3, 4, 5, 6, and the login limits of 7) against the
RUNNING app: the real ASGI server (`ui.app.server`, workbench at / and rater page at /arena/) under uvicorn on
a free port, driven only over HTTP (gradio_client and httpx), with the admin's changes made through the CLI
(`cai users ...`, `cai arena campaign close`). The rater page's models are scripted (they answer with HTML,
and slowly, so a stream can be cut mid-answer). Item 2 (path traversal on write) is replayed
in tests/test_probe_paths.py (constitution export by a viewer, `cai run sft --name ../..`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
import pytest

from cai import arena, models, store, users
from cai.backend_pool import BackendPool
from cai.cli import main as cai
from tests.helpers import BUDGET_S, free_port, serve_app

NAMES = ["quokka-7b", "wombat-3b"]
TRACK = "/track.png"
PIECES = 12


@dataclass
class SlowHTMLBackend:
    """Streams an answer that carries an <img> to a tracking URL, one piece every `delay` seconds."""

    port: int
    delay: float = 0.15
    name: str = "slow-html"
    chat: bool = False

    def render(self, transcript: str) -> str:
        return transcript

    def stream(self, prompt, params):  # noqa: ANN001, ANN201
        text = f' <img src="http://127.0.0.1:{self.port}{TRACK}"> ![x](http://127.0.0.1:{self.port}{TRACK})'
        for i in range(PIECES):
            time.sleep(self.delay)
            text += f" w{i}"
            yield text


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("probe") / "workbench.db"
    db = store.connect(db_path)
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=3)
    port = free_port()
    pool = BackendPool(loader=lambda row: SlowHTMLBackend(port))
    with serve_app(db_path, pool, port) as url:
        yield url, db_path


def rater(url: str, name: str, db_path, password: str = "password1"):
    from gradio_client import Client

    db = store.connect(db_path)
    if users.get_user(db, name) is None:
        users.add_user(db, name, "rater", password)
    client = Client(f"{url}/arena/", verbose=False, httpx_kwargs={"timeout": BUDGET_S})
    client.predict(name, password, api_name="/sign_in")
    client.predict("help", api_name="/start")
    return client


def send(client, message: str = "Hello?") -> list:
    job = client.submit(message, api_name="/send")
    job.result()
    return job.outputs()


REFUSED = "⚠️ **Not done:**"


# -- item 1: deleted, demoted or re-passworded users ---------------------------------------------------


@pytest.mark.parametrize("change", [["users", "remove", "{name}"], ["users", "role", "{name}", "viewer"],
                                    ["users", "passwd", "{name}", "--password", "new-password-1"]])
def test_item1_a_changed_rater_can_no_longer_send_or_vote(running, change):
    url, db_path = running
    name = f"r-{change[1]}"
    client = rater(url, name, db_path)
    send(client)
    assert cai([*(a.format(name=name) for a in change), "--db", str(db_path)]) == 0
    status = client.predict("A is better", "", api_name="/vote")[0]
    assert status.startswith(REFUSED) and "your session has ended" in status
    assert client.predict("again", api_name="/send")[3].startswith(REFUSED)
    db = store.connect(db_path)
    assert db.execute("select count(*) from votes v join users u on u.id = v.user_id where u.name = ?",
                      [name]).fetchone()[0] == 0


def test_item1_a_password_change_or_removal_ends_workbench_sessions(running):
    url, db_path = running
    db = store.connect(db_path)
    for name in ("vic", "val"):
        users.add_user(db, name, "viewer", "password1")
    sessions = {}
    for name in ("vic", "val"):
        c = httpx.Client(base_url=url, timeout=BUDGET_S)
        assert c.post("/login", data={"username": name, "password": "password1"}).status_code == 200
        assert c.get("/gradio_api/login_check").status_code == 200
        sessions[name] = c
    assert cai(["users", "passwd", "vic", "--password", "password2", "--db", str(db_path)]) == 0
    assert cai(["users", "remove", "val", "--db", str(db_path)]) == 0
    for c in sessions.values():
        assert c.get("/gradio_api/login_check").status_code == 401
        assert c.get("/config").status_code == 401
        c.close()


# -- item 3: no anonymous uploads on the rater page ------------------------------------------------------


def test_item3_the_rater_page_takes_no_uploads(running):
    url, _ = running
    with httpx.Client(base_url=url, timeout=BUDGET_S) as c:
        resp = c.post("/arena/gradio_api/upload", files={"files": ("big.bin", b"\0" * 3_000_000)})
        assert resp.status_code == 403
        assert c.post("/arena/gradio_api/upload/", files={"files": ("x.bin", b"x")}).status_code == 403
        assert c.post("/gradio_api/upload", files={"files": ("x.bin", b"x")}).status_code == 401  # needs a login


# -- item 4: model HTML never reaches the page as HTML ----------------------------------------------------


def test_item4_model_html_is_sent_as_text(running):
    url, db_path = running
    client = rater(url, "r-html", db_path)
    outputs = send(client, "<b>hi</b>")
    blob = json.dumps(outputs)
    assert "&lt;img src=" in blob and "&lt;b&gt;hi&lt;/b&gt;" in blob and "!\\\\[x]" in blob
    assert "<img" not in blob and "<b>" not in blob and "![x]" not in blob


# -- item 5: closing a campaign stops open battles ---------------------------------------------------------


def test_item5_closing_the_campaign_stops_an_open_battle(running):
    url, db_path = running
    client = rater(url, "r-close", db_path)
    send(client)
    try:
        assert cai(["arena", "campaign", "close", "help", "--db", str(db_path)]) == 0
        status = client.predict("A is better", "", api_name="/vote")[0]
        assert status == f"{REFUSED} campaign 'help' has been closed: it takes no more messages or votes. Thank you!"
        assert "has been closed" in client.predict("more", api_name="/send")[3]
    finally:
        assert cai(["arena", "campaign", "open", "help", "--db", str(db_path)]) == 0
    db = store.connect(db_path)
    assert db.execute("select count(*) from votes v join users u on u.id = v.user_id where u.name = 'r-close'"
                      ).fetchone()[0] == 0


# -- item 6: a client that disconnects mid-answer leaves no stuck battle -----------------------------------


def test_item6_a_disconnect_mid_answer_rolls_the_turn_back(running):
    url, db_path = running
    client = rater(url, "r-drop", db_path)
    config = httpx.get(f"{url}/arena/config", timeout=BUDGET_S).json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "send")
    dep_id = config["dependencies"][fn_index]["id"]
    db = store.connect(db_path)
    battle = db.execute("select b.id from battles b join users u on u.id = b.user_id where u.name = 'r-drop'"
                        ).fetchone()[0]
    with httpx.Client(base_url=f"{url}/arena", timeout=BUDGET_S) as http:
        joined = http.post("/gradio_api/queue/join", json={
            "data": [None, "Are you there?"], "fn_index": dep_id, "session_hash": client.session_hash,
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": client.session_hash}) as stream:
            for line in stream.iter_lines():
                if "process_generating" in line:
                    break  # the first piece arrived: now the page goes away
    assert db.execute("select count(*) from battle_turns where battle_id = ?", [battle]).fetchone()[0] in (0, 1)
    deadline = time.monotonic() + BUDGET_S
    while db.execute("select count(*) from battle_turns where battle_id = ? and shown_at is null", [battle]
                     ).fetchone()[0]:
        assert time.monotonic() < deadline, "the unfinished turn was left behind"
        time.sleep(0.2)
    outputs = send(client, "Are you there?")  # the rater retries in the same battle
    assert outputs[-1][3] == "Turn 1 of 3: which response is better? Vote below."
    assert client.predict("B is better", "", api_name="/vote")[0].startswith("Vote recorded")


# -- item 7: failed logins are limited per name and per address, and logged ----------------------------------


def test_item7_failed_logins_lock_the_name(running):
    url, db_path = running
    db = store.connect(db_path)
    users.add_user(db, "ada", "admin", "password1")
    with httpx.Client(base_url=url, timeout=BUDGET_S) as c:
        codes = [c.post("/login", data={"username": "ada", "password": f"guess-{i}"}).status_code for i in range(5)]
        assert codes == [400] * 5
        assert c.post("/login", data={"username": "ada", "password": "password1"}).status_code == 400  # locked
    rows = [(r["name"], r["address"], r["reason"]) for r in db["login_attempts"].rows_where("name = 'ada'")]
    assert rows == [("ada", "127.0.0.1", "wrong")] * 5 + [("ada", "127.0.0.1", "locked")]
