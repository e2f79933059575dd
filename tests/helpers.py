"""What several test files share: the inputs they (and bench/soak.py) seed a workbench with (a small constitution
and prompt sets), and the web app served in-process on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cai.constitution import create_constitution
from cai.data import create_prompt_set

# Two critique principles, one comparison principle and one critique exemplar: the least an SL run needs.
CONSTITUTION = {
    "principles": [
        {"kind": "critique", "name": "harm", "critique": "Say how it harms.", "revision": "Rewrite it harmlessly."},
        {"kind": "critique", "name": "rude", "critique": "Say how it is rude.", "revision": "Rewrite it politely."},
        {"kind": "comparison", "name": "cmp", "text": "Which is more harmless?"},
    ],
    "exemplars": [
        {"kind": "critique", "data": "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nCritiqueRequest: Is it rude?"
         "\n\nCritique: Yes.\n\nRevisionRequest: Be kind.\n\nRevision: Hello!\n\nHuman:"},
    ],
}


def seed(db: Any, n_prompts: int = 5, helpful: int = 0, constitution: str = "test") -> None:
    """CONSTITUTION as `constitution`, `n_prompts` red-team prompts in set "red" and, if asked, `helpful`
    helpful prompts in set "help"."""
    create_constitution(db, constitution, principles=CONSTITUTION["principles"], exemplars=CONSTITUTION["exemplars"])
    create_prompt_set(db, "red", "red-team", [f"\n\nHuman: Bad question {i}?\n\nAssistant:" for i in range(n_prompts)])
    if helpful:
        create_prompt_set(db, "help", "helpful", [f"\n\nHuman: Nice question {i}?\n\nAssistant:" for i in range(helpful)])


def _budget_s() -> float:
    """pytest-timeout's limit for one test (pyproject.toml): the run's budget."""
    import tomllib

    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as fh:
        return float(tomllib.load(fh)["tool"]["pytest"]["ini_options"].get("timeout", 900))


# How long a test's client waits for the server: the test's whole budget. Tests assert what the server answered
# and stored, never how fast (a shared CI machine at load 10 answers slowly); pytest-timeout still ends a hang.
BUDGET_S = _budget_s()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_app(db_path: Path, pool: Any, port: int | None = None) -> Iterator[str]:
    """The web app (`ui.app.server`, default model `tiny`, arena models from `pool`) under uvicorn in a thread,
    with the options `ui.app.launch` gives it; yields its URL (see `serve_asgi`)."""
    from ui.app import server, uvicorn_options

    with serve_asgi(server(db_path, "tiny", arena_pool=pool), port, **uvicorn_options()) as url:
        yield url


@contextlib.contextmanager
def serve_asgi(app: Any, port: int | None = None, **options: Any) -> Iterator[str]:
    """An ASGI app under uvicorn (with these Config options) in a thread; yields its URL. On exit it shuts down
    gracefully first (open event streams get a second), then by force: gradio_client reads those streams in
    non-daemon threads, which would otherwise keep pytest from exiting."""
    import uvicorn

    options = {"host": "127.0.0.1", "log_level": "warning", **options, "port": port or free_port(),
               "timeout_graceful_shutdown": 1}
    srv = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + BUDGET_S  # a loaded machine starts slowly: only a server that never starts fails
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://{options['host']}:{options['port']}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            srv.force_exit = True
            thread.join(timeout=10)
