"""Against the running rater page: 20 raters voting at once store exactly 20 votes, and nothing a rater
receives before a battle ends (page, config, API info, streamed answers, errors) names a model."""

import json
import socket
import threading

import httpx
import pytest

from cai import arena, models, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from tests.helpers import BUDGET_S

NAMES = ["quokka-7b", "wombat-3b"]
RATERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_page(db, db_path):
    from ui.arena import build_page

    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness", max_turns=2)
    answers = {"quokka-7b": " Paris is the capital.", "wombat-3b": " The capital is Paris."}
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))
    page = build_page(db_path, pool)
    port = free_port()
    page.queue(default_concurrency_limit=32).launch(server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def rater_session(url: str, name: str):
    from gradio_client import Client

    client = Client(url, verbose=False, httpx_kwargs={"timeout": BUDGET_S})  # #25.13: never a ReadTimeout
    client.predict(name, "password1", api_name="/sign_in")
    client.predict("help", api_name="/start")
    client.predict("What is the capital of France?", api_name="/send")
    return client


def test_twenty_raters_vote_at_once_and_every_vote_is_stored_once(db, running_page):
    for i in range(RATERS):
        users.add_user(db, f"rater{i}", "rater", "password1")
    clients: list = [None] * RATERS
    errors: list[BaseException] = []

    def prepare(i: int) -> None:
        try:
            clients[i] = rater_session(running_page, f"rater{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=prepare, args=(i,)) for i in range(RATERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    barrier = threading.Barrier(RATERS)
    results: list = [None] * RATERS

    def cast(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i].predict(["A is better", "B is better", "Tie", "Both are bad"][i % 4], f"c{i}",
                                            api_name="/vote")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cast, args=(i,)) for i in range(RATERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(r[0].startswith("Vote recorded") for r in results)
    rows = list(db.query("select v.user_id, v.battle_id, v.turn, v.comment, b.user_id as owner "
                         "from votes v join battles b on b.id = v.battle_id order by v.user_id"))
    assert len(rows) == RATERS
    assert len({(r["battle_id"], r["turn"]) for r in rows}) == RATERS
    assert all(r["user_id"] == r["owner"] and r["turn"] == 1 for r in rows)
    assert sorted(r["comment"] for r in rows) == sorted(f"c{i}" for i in range(RATERS))
    # A second vote on the same turn, from every rater at once, is refused (in the status line) and stores nothing.
    refused = []

    def again(i: int) -> None:
        refused.append(clients[i].predict("A is better", "", api_name="/vote")[0])

    threads = [threading.Thread(target=again, args=(i,)) for i in range(RATERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == RATERS and all("already voted on turn 1" in r for r in refused)
    assert db["votes"].count == RATERS


def test_nothing_a_rater_receives_names_a_model_before_the_battle_ends(db, running_page):
    from gradio_client import Client

    users.add_user(db, "rita", "rater", "password1")
    received: list[str] = []
    with httpx.Client(base_url=running_page) as http:
        for path in ("", "config", "gradio_api/info"):
            resp = http.get(path)
            assert resp.status_code == 200, path
            received.append(resp.text)
    client = Client(running_page, verbose=False, httpx_kwargs={"timeout": BUDGET_S})
    received.append(json.dumps(client.view_api(print_info=False, return_format="dict")))
    received.append(json.dumps(client.predict("rita", "password1", api_name="/sign_in")))
    received.append(json.dumps(client.predict("help", api_name="/start")))
    for call, why in ((lambda: client.predict("A is better", "", api_name="/vote"), "has not been shown"),
                      (lambda: client.predict("", api_name="/send"), "type a message first")):
        status = call()[0 if "vote" in why or "shown" in why else 3]
        assert status.startswith("⚠️ **Not done:**") and why in status, status
        received.append(status)
    job = client.submit("Hello?", api_name="/send")
    job.result()
    received += [json.dumps(o) for o in job.outputs()]  # every streamed update, not only the last
    received.append(json.dumps(client.predict("Tie", "", api_name="/vote")))
    blob = "\n".join(received)
    assert "Paris is the capital." in blob and "The capital is Paris." in blob  # the answers did arrive
    for name in NAMES:
        assert name not in blob
    reveal = client.predict(api_name="/end")[1]
    assert all(name in reveal for name in NAMES)
