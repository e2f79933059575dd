"""#25.9: refused Gradio event streams (`/queue/data` for an unknown session, or several streams for one) each
leave one line in the log, not a traceback (the probe filled the app log with ~650 KeyError tracebacks)."""

from __future__ import annotations

import contextlib
import logging
import time

import httpx
import pytest

from cai import arena, models, users
from cai.backend_pool import BackendPool
from cai.backends.base import ScriptedBackend
from tests.helpers import BUDGET_S, serve_app

NAMES = ["quokka-7b", "wombat-3b"]
TIMEOUT = BUDGET_S  # a loaded machine may answer slowly; nothing here is about speed


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def running(db, db_path):
    for n in NAMES:
        models.register_model(db, n, "tiny")
    arena.create_campaign(db, "help", NAMES, "helpfulness")
    users.add_user(db, "rita", "rater", "password1")
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p: " Fine."))
    with serve_app(db_path, pool) as url:
        yield url


def test_refused_event_streams_log_one_line_each_and_no_traceback(running):
    from gradio_client import Client

    url = running
    client = Client(f"{url}/arena/", verbose=False, httpx_kwargs={"timeout": TIMEOUT})
    client.predict("rita", "password1", api_name="/sign_in")
    records = Records()
    watched = [logging.getLogger(name) for name in ("uvicorn.error", "ui.app")]
    for logger in watched:
        logger.addHandler(records)
    try:
        with httpx.Client(base_url=f"{url}/arena", timeout=TIMEOUT) as c:
            for i in range(6):  # sessions the queue does not know
                assert c.get("/gradio_api/queue/data", params={"session_hash": f"nope-{i}"}).status_code == 200
            with contextlib.ExitStack() as streams:  # several streams for one session, then all go away
                for _ in range(4):
                    streams.enter_context(c.stream("GET", "/gradio_api/queue/data",
                                                   params={"session_hash": client.session_hash}))
        deadline = time.monotonic() + TIMEOUT
        while len(records.records) < 6 + 3:  # each stream the server could not serve is logged once it ends
            assert time.monotonic() < deadline, [r.getMessage() for r in records.records]
            time.sleep(0.2)
        time.sleep(1)
    finally:
        for logger in watched:
            logger.removeHandler(records)
    assert [r.getMessage() for r in records.records if r.exc_info] == []  # no traceback at all
    lines = [r.getMessage() for r in records.records]
    assert len(lines) == 9 and all(line.startswith("event stream refused: /arena/gradio_api/queue/data session=")
                                   for line in lines), lines
