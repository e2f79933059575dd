"""The rater page served on a real port with scripted models, and a signed-in rater session on it.

Shared by the arena benchmark, the soak campaign and their tests: models answer from a script, so what
is measured and checked is the vote path itself (HTTP, Gradio queue, the vote transaction).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    db_path: str | Path,
    answers: dict[str, str],
    campaign: str,
    *,
    max_turns: int,
    raters: int = 0,
    password: str = "password1",
    concurrency: int = 32,
) -> Iterator[str]:
    """Register the models of `answers` (name -> scripted answer), open `campaign` over them, add raters
    r0..r{raters-1}, and serve the rater page; yields its URL and closes it on exit."""
    from cai import arena, models, store, users
    from cai.backend_pool import BackendPool
    from cai.backends.base import ScriptedBackend
    from ui.arena import build_page

    db = store.connect(db_path)
    try:
        for name in answers:
            models.register_model(db, name, "tiny")
        arena.create_campaign(db, campaign, list(answers), "helpfulness", max_turns=max_turns)
        for i in range(raters):
            users.add_user(db, f"r{i}", "rater", password)
    finally:
        db.close()
    pool = BackendPool(loader=lambda row: ScriptedBackend(respond=lambda p, n=row["name"]: answers[n]))
    page = build_page(db_path, pool)
    port = free_port()
    page.queue(default_concurrency_limit=concurrency).launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


def rater(url: str, name: str, campaign: str, password: str = "password1", timeout: float = 120.0) -> Any:
    """A gradio_client session signed in as `name` with a battle of `campaign` started.

    `timeout` bounds each HTTP request (httpx's default is 5 s; a browser waits far longer, and a loaded
    machine answers 50 raters at once in more than 5 s).
    """
    from gradio_client import Client

    client = Client(url, verbose=False, httpx_kwargs={"timeout": timeout})
    client.predict(name, password, api_name="/sign_in")
    client.predict(campaign, api_name="/start")
    return client


def run_threads(n: int, body: Callable[[int], None]) -> list[BaseException]:
    """Run body(0..n-1) in n threads at once; returns the exceptions they raised."""
    import threading

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            body(i)
        except BaseException as exc:  # collected and reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
