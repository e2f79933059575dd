"""The workbench web app: one Gradio Blocks with a tab per module of `ui/`, behind a login.

Contract for tab modules (the arena engineer's `ui/arena.py` follows it too):
- each module exposes `build(ctx: AppContext) -> None`, called inside an open `gr.Tab` (or column); it
  creates its components and wires its events there. Handlers are plain module functions taking the
  context, their inputs and `request: gr.Request`, and return values (testable without a browser);
- shared resources come only through `ctx` (`ctx.db()` gives a per-thread connection, `ctx.model`
  the default model spec); per-user state lives in `gr.State`, never in module globals;
  `ui.common.on_page_load(fn, inputs, outputs)` refreshes a tab on each page load;
- roles are enforced inside handlers with `ui.common.require(ctx, request, ROLES)`:
  EDIT_ROLES (admin) to change things, BROWSE_ROLES (admin, viewer) to read, ARENA_ROLES (admin, rater)
  for the arena.
Layout by role (decided on page load; both views start hidden): admins and viewers get the workbench
tabs (the arena as its last tab, "Arena"); raters get only the arena view, a second `ui.arena.build(ctx)`
(Gradio 6 cannot hide a tab after render, so the rater view is its own column). The standalone rater page
(`ui.arena.page_for`, own sign-in and invite codes) is mounted at /arena by `server`.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from cai import store, users
from cai.queries import users as user_queries
from ui import arena
from ui.common import BROWSE_ROLES, CSS, AppContext, bind, esc, username

# (tab label, tab id, module) of the workbench view (admins and viewers); raters get the arena view instead.
TABS = [
    ("Constitution", "constitution", "ui.constitution"),
    ("Chains", "chains", "ui.chains"),
    ("Labels", "labels", "ui.labels"),
    ("Dashboard", "dashboard", "ui.dashboard"),
    ("Models", "models", "ui.models"),
    ("Arena", "arena", "ui.arena"),
    ("Experiments", "experiments", "ui.experiments"),
]


def header_html(name: str | None, role: str | None) -> str:
    who = f"Signed in as <b>{esc(name)}</b> ({esc(role)})" if name else "Not signed in"
    return (
        '<div style="display:flex;justify-content:space-between;align-items:baseline">'
        '<h2 style="margin:0">Constitutional AI Workbench</h2>'
        f'<span>{who} · <a href="/logout">log out</a></span></div>'
    )


def view_for(role: str | None) -> str:
    """Which view a role gets: "workbench" (admin, viewer), "arena" (rater) or "none" (no known role)."""
    if role in BROWSE_ROLES:
        return "workbench"
    return "arena" if role == "rater" else "none"


def on_load(ctx: AppContext, request: gr.Request) -> list:
    """Header text, and which view this user's role may see."""
    name = username(request)
    role = users.role_of(ctx.db(), name)
    view = view_for(role)
    return [
        header_html(name, role),
        gr.Column(visible=view == "workbench"),
        gr.Column(visible=view == "arena"),
        gr.Markdown(visible=view == "none"),
    ]


def build_app(db_path: str | Path, model: str = "default") -> gr.Blocks:
    """The whole app over the database at `db_path`; `model` is the default for chat and forms."""
    ctx = AppContext(Path(db_path), model)
    ctx.db()  # create and migrate before the first request
    with gr.Blocks(title="Constitutional AI Workbench") as demo:
        header = gr.HTML(header_html(None, None))
        with gr.Column(visible=False) as workbench, gr.Tabs():
            for label, tab_id, module in TABS:
                with gr.Tab(label, id=tab_id):
                    importlib.import_module(module).build(ctx)
        with gr.Column(visible=False) as rater_view:
            arena.build(ctx)
        nobody = gr.Markdown("This account has no role that can use the workbench.", visible=False)
        demo.load(bind(on_load, ctx), None, [header, workbench, rater_view, nobody])
    return demo


# The client address of the request being served, set by `Guard` (Gradio's auth callback gets no request).
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("cai_client", default=None)


def auth_function(db_path: str | Path, policy: users.LoginPolicy | None = None):  # type: ignore[no-untyped-def]
    """Gradio's login check over the users table: lockout per name and per client address, each attempt
    logged (`cai.users.attempt_login`)."""

    def check(name: str, password: str) -> bool:
        db = store.connect(db_path)
        try:
            return users.attempt_login(db, name, password, CLIENT.get(), policy=policy or users.LoginPolicy()).user is not None
        finally:
            db.close()

    return check


def off_loop(check):  # type: ignore[no-untyped-def]
    """The check as a coroutine that runs it in a worker thread: Gradio awaits coroutine auth functions,
    but calls plain ones on the event loop, where each scrypt (~50 ms) would stall every other request."""
    import anyio

    async def check_async(name: str, password: str) -> bool:
        ctx = contextvars.copy_context()
        return bool(await anyio.to_thread.run_sync(lambda: ctx.run(check, name, password)))

    return check_async


class SessionTokens(dict):  # type: ignore[type-arg]
    """Gradio's session table (token -> user name), which also remembers each session's user id and
    password epoch: a session ends once its user is removed or changes password (`cai.users.session_user`).
    Gradio reads identities only through `.get`, so that is where the check happens."""

    def __init__(self, db_path: str | Path) -> None:
        super().__init__()
        self.db_path = db_path
        self._local = threading.local()
        self._sessions: dict[str, tuple[int, int]] = {}

    def _db(self):  # type: ignore[no-untyped-def]
        if getattr(self._local, "db", None) is None:
            self._local.db = store.connect(self.db_path)
        return self._local.db

    def __setitem__(self, token: str, name: str) -> None:
        key = user_queries.session_key(self._db(), name)
        if key:
            self._sessions[token] = key
            super().__setitem__(token, name)

    def get(self, token: Any, default: Any = None) -> Any:
        if token not in self:
            return default
        user_id, epoch = self._sessions.get(token, (0, -1))
        if users.session_user(self._db(), user_id, epoch) is None:
            self.pop(token, None)
            self._sessions.pop(token, None)
            return default
        return super().get(token, default)


class Guard:
    """ASGI middleware: remembers the client address for the login check, and refuses uploads to the rater
    page (it takes no files, and it has no login of Gradio's, so an upload there would be anonymous)."""

    def __init__(self, app: Any, no_upload_prefix: str = "/arena/") -> None:
        self.app = app
        self.prefix = no_upload_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            CLIENT.set(client[0] if client else None)
            path = scope.get("path", "")
            if scope["type"] == "http" and path.startswith(self.prefix) and "/upload" in path[len(self.prefix):]:
                from starlette.responses import PlainTextResponse

                await PlainTextResponse("The rater page takes no uploads.", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def server(db_path: str | Path, model: str = "default", arena_pool: Any = None,
           login_policy: users.LoginPolicy | None = None, auth_off_loop: bool = True) -> Any:
    """The ASGI app: the rater page at /arena (its own sign-in, invite codes) and the workbench at / behind
    Gradio's login over the users table. `arena_pool` serves the rater page's models (tests pass scripted ones);
    `login_policy` and `auth_off_loop=False` exist for bench/login.py's before/after comparison."""
    from fastapi import FastAPI
    from gradio.routes import App

    app = FastAPI()
    arena_page = calm_queue(arena.page_for(db_path, arena_pool).queue(default_concurrency_limit=8))
    app = gr.mount_gradio_app(app, arena_page, path="/arena", max_file_size="1kb", **_look())
    demo = calm_queue(build_app(db_path, model).queue(default_concurrency_limit=8))
    app = gr.mount_gradio_app(
        app,
        demo,
        path="",
        auth=off_loop(auth_function(db_path, login_policy)) if auth_off_loop else auth_function(db_path, login_policy),
        auth_message="Constitutional AI Workbench: sign in (users are managed with `cai users`).",
        max_file_size="5mb",
        **_look(),
    )
    for route in app.routes:
        if isinstance(getattr(route, "app", None), App) and route.app.auth is not None:
            route.app.tokens = SessionTokens(db_path)
    return Guard(app)


def calm_queue(blocks: gr.Blocks, free_s: float = 0.02, progress_s: float = 0.1) -> gr.Blocks:
    """Gradio's queue polls for work every 1 ms (progress every 10 ms) even with no client: two apps made an
    idle server use ~5-10% of a core. Polling every `free_s` adds at most that to an event's start."""
    queue = getattr(blocks, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = free_s
        queue.progress_update_sleep_when_free = progress_s
    return blocks


def _look() -> dict[str, Any]:
    return {"css": CSS, "theme": gr.themes.Soft(), "footer_links": [], "ssr_mode": False, "show_error": True}


def launch(db_path: str | Path, model: str = "default", *, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the app until interrupted."""
    import uvicorn

    print(f"* Workbench at http://{host}:{port}/  (rater page: http://{host}:{port}/arena/)", flush=True)
    uvicorn.run(server(db_path, model), host=host, port=port, log_level="warning")
