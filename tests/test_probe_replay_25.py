"""Replays the third adversarial probe (issue #25, items 1, 2, 4, 5, 6, 10 and 11) against the RUNNING app:
the real ASGI server under uvicorn on a free port, driven only over HTTP (httpx and gradio_client), with the
admin's side done through the CLI. Item 2 starts the server the way `python app.py` does (`ui.app.launch`,
with uvicorn.run caught to run it in a thread), since the defect was in how uvicorn was started. The rater
page's models are scripted. Client timeouts are generous on purpose: nothing here asserts how fast the
server answers, only what it answered and what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from cai import arena, models, store, users
from cai.arena import invites
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from cai.cli import main as cai
from tests.helpers import BUDGET_S, serve_app, serve_asgi

NAMES = ["quokka-7b", "wombat-3b"]
ANSWERS = {"quokka-7b": " Paris.", "wombat-3b": " Rome."}  # never naming a model, so no vote is a leak
TIMEOUT = BUDGET_S  # a loaded CI machine may be slow; only a server that never answers fails
REFUSED = "⚠️ **Not done:**"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("probe25") / "workbench.db"
    db = store.connect(db_path)
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=3)
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: ANSWERS[n]))
    with serve_app(db_path, pool) as url:
        yield url, db_path


@contextlib.contextmanager
def launched(db_path: Path, **options: Any) -> Iterator[str]:
    """The app as `python app.py` serves it: the uvicorn settings `ui.app.launch` gives its server (through
    `ui.warmup.serve`), with the app it builds, run in a thread."""
    import uvicorn

    from ui import app as ui_app

    got: dict[str, Any] = {}
    real_run = uvicorn.Server.run
    uvicorn.Server.run = lambda self, *a, **kw: got.update(config=self.config)  # type: ignore[method-assign]
    try:
        ui_app.launch(db_path, "tiny", **options)
    finally:
        uvicorn.Server.run = real_run  # type: ignore[method-assign]
    config = got["config"]
    app = config.app.build()  # the workbench the loading page stands in for
    with serve_asgi(app, proxy_headers=config.proxy_headers, forwarded_allow_ips=config.forwarded_allow_ips,
                    log_level="warning") as url:
        yield url


def rater(url: str, name: str, db_path: Path, password: str = "password1"):
    from gradio_client import Client

    db = store.connect(db_path)
    if users.get_user(db, name) is None:
        users.add_user(db, name, "rater", password)
    client = Client(f"{url}/arena/", verbose=False, httpx_kwargs={"timeout": TIMEOUT})
    client.predict(name, password, api_name="/sign_in")
    client.predict("help", api_name="/start")
    return client


def attempts(db_path: Path, name: str) -> list[tuple[str, str]]:
    return [(r["address"], r["reason"]) for r in store.connect(db_path)["login_attempts"].rows_where(
        "name = ?", [name], order_by="id")]


# -- item 1: 100 concurrent wrong sign-ins for one name check at most 5 passwords --------------------------


def test_item1_a_hundred_concurrent_wrong_sign_ins_check_at_most_five(running):
    url, db_path = running
    users.add_user(store.connect(db_path), "ada", "admin", "password1")

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as c:
            sent = [c.post("/login", data={"username": "ada", "password": f"guess-{i}"}) for i in range(100)]
            return [r.status_code for r in await asyncio.gather(*sent)]

    assert asyncio.run(storm()) == [400] * 100
    reasons = [reason for _, reason in attempts(db_path, "ada")]
    assert len(reasons) == 100 and reasons.count("wrong") == 5  # the attempt log: 5 checked, 95 refused unchecked
    assert set(reasons) == {"wrong", "locked"}


# -- item 2: X-Forwarded-For is trusted only from the proxies the operator names ---------------------------


def test_item2_a_forged_forwarded_for_neither_dodges_the_lockout_nor_reaches_the_log(tmp_path):
    db_path = tmp_path / "workbench.db"
    users.add_user(store.connect(db_path), "ada", "admin", "password1")
    with launched(db_path) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        for i in range(8):  # one name, a new forged address each time
            c.post("/login", data={"username": "ada", "password": f"guess-{i}"},
                   headers={"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(21):  # many names, a new forged address each time: the per-address limit (20) holds
            c.post("/login", data={"username": f"ghost{i}", "password": "guess"},
                   headers={"X-Forwarded-For": f"203.0.113.{i}"})
        assert c.post("/login", data={"username": "ada", "password": "password1"},
                      headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 400
    assert attempts(db_path, "ada") == [("127.0.0.1", "wrong")] * 5 + [("127.0.0.1", "locked")] * 4
    assert attempts(db_path, "ghost20") == [("127.0.0.1", "locked")]


def test_item2_behind_a_named_proxy_the_forwarded_address_and_scheme_count(tmp_path):
    db_path = tmp_path / "workbench.db"
    users.add_user(store.connect(db_path), "ada", "admin", "password1")
    with launched(db_path, forwarded_allow_ips="127.0.0.1") as url, httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        behind = c.post("/login", data={"username": "ada", "password": "password1"},
                        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert behind.status_code == 200
        assert "secure" in behind.headers["set-cookie"].lower()  # item 10: automatic over https
        plain = c.post("/login", data={"username": "ada", "password": "password1"})
        assert plain.status_code == 200 and "secure" not in plain.headers["set-cookie"].lower()
    assert attempts(db_path, "ada") == [("203.0.113.9", "ok"), ("127.0.0.1", "ok")]


# -- item 4: a rater's comment never reaches a CSV as a formula ------------------------------------------


def test_item4_a_formula_comment_is_neutralised_in_the_csv_export(running, tmp_path):
    url, db_path = running
    client = rater(url, "r-csv", db_path)
    client.predict("Hello?", api_name="/send")
    comment = "@SUM(1+1)*cmd|' /C calc'!A0"
    assert client.predict("A is better", comment, api_name="/vote")[0].startswith("Vote recorded")
    out = tmp_path / "votes.csv"
    assert cai(["arena", "export", str(out), "--campaign", "help", "--db", str(db_path)]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame["comment"].tolist() == ["'" + comment]
    jsonl = tmp_path / "votes.jsonl"
    assert cai(["arena", "export", str(jsonl), "--campaign", "help", "--db", str(db_path)]) == 0
    assert pd.read_json(jsonl, lines=True)["comment"].tolist() == [comment]  # JSONL keeps the text as typed


# -- item 5: a long message is refused server-side and never stored -----------------------------------------


def test_item5_a_message_over_the_cap_is_refused_and_not_stored(running):
    url, db_path = running
    client = rater(url, "r-long", db_path)
    outputs = client.predict("x" * 200_000, api_name="/send")
    assert outputs[3] == (f"{REFUSED} your message is 200,000 characters long; this campaign takes at most 4,000: "
                          "shorten it")
    db = store.connect(db_path)
    assert db.execute("select count(*) from battle_turns t join battles b on b.id = t.battle_id join users u "
                      "on u.id = b.user_id where u.name = 'r-long'").fetchone()[0] == 0


# -- item 6: checking a database that is not there is an error, and creates nothing -------------------------


def test_item6_db_check_on_a_missing_file_fails_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nothere" / "x.db"
    assert cai(["db", "check", "--db", str(missing)]) == 2
    assert "no such workbench database" in capsys.readouterr().err
    assert not missing.parent.exists()


# -- item 10: sessions end only by a same-site POST; sign-in refuses other sites ----------------------------


def test_item10_log_out_is_a_post_with_the_session_and_origin_checks(running):
    url, db_path = running
    users.add_user(store.connect(db_path), "vic", "viewer", "password1")
    with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        assert c.post("/login", data={"username": "vic", "password": "password1"}).status_code == 200
        assert c.get("/logout").status_code == 200  # the page with the button: a GET ends nothing
        assert c.get("/gradio_api/login_check").status_code == 200
        cross = c.post("/logout", headers={"Origin": "http://evil.example"})
        assert (cross.status_code, cross.json()) == (403, {"detail": "Refused: this request came from another site."})
        assert c.post("/logout", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.get("/gradio_api/login_check").status_code == 200
        done = c.post("/logout", headers={"Origin": url})
        assert (done.status_code, done.headers["location"]) == (303, "/login")
        assert c.get("/gradio_api/login_check").status_code == 401
        assert c.post("/logout").status_code == 401  # no session: nothing to end


def test_item10_sign_in_from_another_site_is_refused_unchecked(running):
    url, db_path = running
    users.add_user(store.connect(db_path), "val", "viewer", "password1")
    with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
            resp = c.post("/login", data={"username": "val", "password": "password1"}, headers=headers)
            assert resp.status_code == 403 and "set-cookie" not in resp.headers, headers
        assert attempts(db_path, "val") == []  # refused before any password check
        ok = c.post("/login", data={"username": "val", "password": "password1"},
                    headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 200 and "httponly" in ok.headers["set-cookie"].lower()


# -- item 11: wrong invite codes are throttled per address ------------------------------------------------


def test_item11_wrong_invite_codes_are_throttled(running):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, db_path = running
    code = invites.create_invites(store.connect(db_path), 1)[0]
    client = Client(f"{url}/arena/", verbose=False, httpx_kwargs={"timeout": TIMEOUT})
    errors = []
    for i in range(11):
        with pytest.raises(AppError) as err:
            client.predict(f"wrong-{i}" if i < 10 else code, f"new{i}", "password1", api_name="/join")
        errors.append(str(err.value))
    assert all("that invite code is not valid or has already been used" in e for e in errors[:10])
    assert "too many wrong invite codes: try again in" in errors[10]
    assert users.get_user(store.connect(db_path), "new10") is None
