"""Serve at once, build the app behind: the port accepts connections as soon as the command starts, and a
visitor sees a "loading" page (which reloads itself) until the workbench is built.

Building the app imports Gradio and the model libraries and builds every page (tens of seconds on a small,
busy machine). `Warming` is an ASGI app that answers 503 + a loading page meanwhile, builds the real app in a
thread, runs the real app's lifespan startup (its queues) and then hands every request to it. `serve` prints
the URL only once the socket is listening. This module imports neither Gradio nor torch.
"""

from __future__ import annotations

import asyncio
import html
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

LOADING_PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Loading the workbench…</title></head><body style="font-family:sans-serif;margin:3em">
<h2 id="loading">Loading the workbench…</h2><p>__WHAT__</p></body></html>"""
STILL_LOADING = ("The first start imports the model libraries and builds every page (a minute or so on a small, "
                 "busy machine). This page reloads itself until the workbench is ready.")


class Warming:
    """ASGI: a loading page until `build()` (run in a thread at startup) returns the real app, then the app."""

    def __init__(self, build: Callable[[], Any], on_ready: Callable[[float], None] | None = None) -> None:
        self.build, self.on_ready = build, on_ready
        self.app: Any = None
        self.error: str | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] | None = None
        self._stopped: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            what = (f"The workbench failed to start: {html.escape(self.error)}" if self.error else STILL_LOADING)
            body = LOADING_PAGE.replace("__WHAT__", what).encode()
            await send({"type": "http.response.start", "status": 500 if self.error else 503,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"2"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # "try again later"

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup: answer at once, so the server listens while the app builds
        boot = asyncio.create_task(self._boot())
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        boot.cancel()
        if self._inbox is not None and self._stopped is not None:
            await self._inbox.put({"type": "lifespan.shutdown"})
            await self._stopped.wait()
        await send({"type": "lifespan.shutdown.complete"})

    async def _boot(self) -> None:
        t0 = time.monotonic()
        try:
            app = await asyncio.to_thread(self.build)
        except Exception as exc:  # shown on the page and printed; the server stays up to say so
            self.error = f"{type(exc).__name__}: {exc}"
            print(f"* The workbench failed to start: {self.error}", file=sys.stderr, flush=True)
            return
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        started, stopped = asyncio.Event(), asyncio.Event()

        async def inner_send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup"):
                started.set()
            elif message["type"].startswith("lifespan.shutdown"):
                stopped.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        task = asyncio.create_task(app(scope, inbox.get, inner_send))
        task.add_done_callback(lambda _: (started.set(), stopped.set()))  # an app without lifespan support
        await inbox.put({"type": "lifespan.startup"})
        await started.wait()
        self._inbox, self._stopped = inbox, stopped
        self.app = app
        if self.on_ready:
            self.on_ready(time.monotonic() - t0)


FORWARDED_ENV = "CAI_FORWARDED_ALLOW_IPS"


def uvicorn_options(forwarded_allow_ips: str | None = None) -> dict[str, Any]:
    """How uvicorn is told whom to trust: `X-Forwarded-For`/`-Proto` are read only from the proxies the
    operator names (`--forwarded-allow-ips`, else $CAI_FORWARDED_ALLOW_IPS: addresses or networks,
    comma-separated, or "*"), and ignored by default. Uvicorn's own default trusts them from 127.0.0.1, so any
    local client could forge the address that the sign-in lockout and the attempt log key on."""
    import os

    ips = (forwarded_allow_ips if forwarded_allow_ips is not None else os.environ.get(FORWARDED_ENV, "")).strip()
    return {"proxy_headers": bool(ips), "forwarded_allow_ips": ips or None}


def serve(build: Callable[[], Any], host: str, port: int, banner: str, forwarded_allow_ips: str | None = None) -> None:
    """Serve `build()`'s app on host:port until interrupted; print `banner` once the port is listening.
    Forwarded headers are trusted only from the proxies named (`uvicorn_options`)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(banner + "  (loading: the page says so until the workbench is ready)", flush=True)

    def ready(seconds: float) -> None:
        print(f"* Workbench ready (built in {seconds:.0f} s)", flush=True)

    Server(uvicorn.Config(Warming(build, ready), host=host, port=port, log_level="warning",
                          **uvicorn_options(forwarded_allow_ips))).run()


def probe(host: str, port: int, timeout: float = 5.0) -> None:
    """Return when the app at host:port is ready; raise OSError while it is not listening or still loading
    (for scripts and tests that start `python app.py` and wait for it)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/login", timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            raise OSError(f"the app at {host}:{port} is still loading") from None
