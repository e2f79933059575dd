"""The workbench web app: one page per role, behind one sign-in.

Pages (`server`):
- `/login`: the sign-in form (`POST /login` answers JSON, as Gradio's did). Lockout per name and per client
  address, every attempt logged (`cai.users.attempt_login`); the check runs off the event loop. The page
  prefetches the static files the landing pages load (`LandingAssets`), while the user types.
- `/`: the workbench, a multipage Gradio Blocks per role (`TABS`: one page per tab, a navbar between them, so
  the browser builds only the page it opens; the home page, where every sign-in lands, is a light overview),
  chosen by the session's role on every request: admins get every
  page (the Arena page, /campaigns, holds campaigns, ratings and invites), viewers every page but that one. A
  page a role may not use is never sent to it: `/config` and `/gradio_api/info` come from its own Blocks, and a
  rater or a signed-out client gets 401 there (a browser asking for `/` is sent to `/arena/` or `/login`).
- `/arena/`: the rater page (`ui.arena.build_page`): battles for raters and admins, who arrive signed in from
  `/login`; it also has its own sign-in and takes invite codes.
A session ends on log out, and when its user is removed or changes password (`cai.users.session_user`).

Contract for tab modules (the arena engineer's `ui/arena.py` follows it too):
- each module exposes `build(ctx: AppContext) -> None`, called inside its page (`Blocks.route`); it creates its
  components and wires its events there. Handlers are plain module functions taking the context, their
  inputs and `request: gr.Request`, and return values (testable without a browser);
- shared resources come only through `ctx` (`ctx.db()` gives a per-thread connection, `ctx.model`
  the default model spec); per-user state lives in `gr.State`, never in module globals;
  `ui.common.on_page_load(fn, inputs, outputs)` refreshes a page each time it loads;
- roles are still enforced inside handlers with `ui.common.require(ctx, request, ROLES)`:
  EDIT_ROLES (admin) to change things, BROWSE_ROLES (admin, viewer) to read, ARENA_ROLES (admin, rater)
  for the arena.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import logging
import re
import secrets
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.requests import HTTPConnection

from cai import store, users
from cai.backends.builtin import POLICY_DEFAULT
from ui import arena
from ui.common import BROWSE_ROLES, CSS, EDIT_ROLES, AppContext, esc
from ui.warmup import FORWARDED_ENV, uvicorn_options  # noqa: F401  (they live where no Gradio is imported)

# (label, path, module, roles that get it): the pages of the workbench, each its own Gradio page (`Blocks.route`)
# with a navbar, so the browser builds only the page it opens. The first is the home page, at /.
TABS = [
    ("Home", "", "ui.home", BROWSE_ROLES),  # light on purpose: the page every sign-in lands on
    ("Constitution", "constitution", "ui.constitution", BROWSE_ROLES),
    ("Chains", "chains", "ui.chains", BROWSE_ROLES),
    ("Labels", "labels", "ui.labels", BROWSE_ROLES),
    ("Dashboard", "dashboard", "ui.dashboard", BROWSE_ROLES),
    ("Models", "models", "ui.models", BROWSE_ROLES),
    ("Arena", "campaigns", "ui.arena", EDIT_ROLES),  # /arena/ is the rater page
    ("Experiments", "experiments", "ui.experiments", BROWSE_ROLES),
    ("Pipeline", "pipeline", "ui.pipeline", BROWSE_ROLES),
]
log = logging.getLogger(__name__)
WORKBENCH_ROLES = BROWSE_ROLES  # the roles with a workbench page; raters have the rater page
SESSION_COOKIE = "cai-session"


def header_html(name: str | None, role: str | None) -> str:
    """The header of every workbench page. Pages are built once per role, so they carry the role and an empty
    name that `HEADER_JS` fills in the browser from the page's own config (Gradio puts the signed-in user there):
    no request after the page loads."""
    who = f'Signed in as <b class="cai-user">{esc(name or "")}</b> ({esc(role)})' if role else "Not signed in"
    return (
        '<div style="display:flex;justify-content:space-between;align-items:baseline">'
        '<h2 style="margin:0">Constitutional AI Workbench</h2>'
        f'<span>{who} · <a href="/arena/">rater page</a> · <a href="/logout">log out</a></span></div>'
    )


HEADER_JS = ("const who = element.querySelector('.cai-user');"
             " if (who) who.textContent = (window.gradio_config || {}).username || '';")


def home_for(role: str | None) -> str:
    """Where a role's page is: "/" (admin, viewer), "/arena/" (rater) or "/login" (no known role)."""
    if role in WORKBENCH_ROLES:
        return "/"
    return "/arena/" if role == "rater" else "/login"


def tabs_for(role: str) -> list[tuple[str, str, str]]:
    """The (label, path, module) of the workbench pages a role gets."""
    return [(label, path, module) for label, path, module, roles in TABS if role in roles]


def _page(ctx: AppContext, role: str, module: str) -> None:
    """One workbench page: navbar, header, then the module's components."""
    gr.Navbar(main_page_name=TABS[0][0])
    gr.HTML(header_html(None, role), js_on_load=HEADER_JS, elem_id="cai-header")
    importlib.import_module(module).build(ctx)


def build_app(db_path: str | Path, model: str = POLICY_DEFAULT, role: str = "admin") -> gr.Blocks:
    """The workbench of `role` over the database at `db_path`, one page per tab; `model` is the default for chat
    and forms."""
    if role not in WORKBENCH_ROLES:
        raise ValueError(f"role {role!r} has no workbench page (one of {', '.join(WORKBENCH_ROLES)})")
    ctx = AppContext(Path(db_path), model)
    ctx.db()  # create and migrate before the first request
    (_, _, home), *pages = tabs_for(role)
    with gr.Blocks(title="Constitutional AI Workbench") as demo:
        _page(ctx, role, home)
    for label, path, module in pages:
        with demo.route(label, path):
            _page(ctx, role, module)
    return demo


# -- sign-in and sessions ------------------------------------------------------------------------------


class Sessions:
    """Signed-in sessions: cookie token -> (user id, password epoch). A session ends on log out, or once its
    user is removed or changes password (`cai.users.session_user` is checked on every lookup)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._tokens: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _db(self):  # type: ignore[no-untyped-def]
        if getattr(self._local, "db", None) is None:
            self._local.db = store.connect(self.db_path)
        return self._local.db

    def open(self, user: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (int(user["id"]), int(user.get("session_epoch") or 0))
        return token

    def user(self, token: str | None) -> dict[str, Any] | None:
        """The session's user (id, name, role, session_epoch), or None (unknown token, or the session ended)."""
        held = self._tokens.get(token or "")
        if held is None:
            return None
        user = users.session_user(self._db(), *held)
        if user is None:
            self.close(token)
            return None
        return {**user, "session_epoch": held[1]}

    def close(self, token: str | None) -> None:
        with self._lock:
            self._tokens.pop(token or "", None)

    def from_request(self, request: Any) -> dict[str, Any] | None:
        cookies = getattr(request, "cookies", None) or {}
        return self.user(cookies.get(SESSION_COOKIE))


def login_check(db_path: str | Path, policy: users.LoginPolicy | None = None):  # type: ignore[no-untyped-def]
    """`check(name, password, address) -> LoginResult` over the users table, under the lockout policy."""

    def check(name: str, password: str, address: str | None) -> users.LoginResult:
        db = store.connect(db_path)
        try:
            return users.attempt_login(db, name, password, address, policy=policy or users.LoginPolicy())
        finally:
            db.close()

    return check


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in · Constitutional AI Workbench</title>
<style>body{font-family:system-ui,sans-serif;background:#f6f7fb;margin:0;display:flex;justify-content:center}
main{margin-top:12vh;background:#fff;padding:28px 32px;border-radius:12px;box-shadow:0 2px 12px #0001;width:340px}
h1{font-size:1.2em;margin:0 0 6px}p{color:#555;font-size:.9em;margin:0 0 16px}label{display:block;margin:10px 0 4px}
input{width:100%;box-sizing:border-box;padding:8px;border:1px solid #ccc;border-radius:6px;font-size:1em}
button{margin-top:16px;width:100%;padding:9px;border:0;border-radius:6px;background:#4f46e5;color:#fff;font-size:1em}
#error{color:#b00020;min-height:1.2em;margin-top:10px;font-size:.9em}</style>__PREFETCH__</head><body><main>
<h1>Constitutional AI Workbench</h1><p>__MESSAGE__</p>
<form id="login" method="post" action="/login">
<label for="username">username</label><input id="username" name="username" autocomplete="username" autofocus required>
<label for="password">password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<button type="submit">Login</button><div id="error" role="alert"></div></form>
<p style="margin-top:14px">Have an invite code? Redeem it on the <a href="/arena/">rater page</a>.</p></main>
<script>document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault(); const err = document.getElementById("error"); err.textContent = "";
  const r = await fetch("/login", {method: "POST", body: new URLSearchParams(new FormData(e.target))});
  const body = await r.json().catch(() => ({}));
  if (r.ok) { window.location.assign(body.home || "/"); } else { err.textContent = body.detail || "Sign-in failed."; }
});</script></body></html>"""


LOGOUT_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log out</title></head>
<body style="font-family:system-ui,sans-serif;margin:12vh auto;width:340px"><form method="post" action="/logout">
<button type="submit" autofocus style="padding:9px 20px">Log out</button> <a href="/">stay signed in</a></form>
</body></html>"""
CROSS_SITE = "Refused: this request came from another site."


def same_origin(request: Any) -> bool:
    """The CSRF check of the POSTs that change a session (/login, /logout): a browser says where a request
    comes from (`Origin`, `Sec-Fetch-Site`), and one sent by another site's page is refused. Clients that
    are not browsers send neither and are let through (they cannot be made to carry a victim's cookies).
    Behind a reverse proxy the proxy must pass the original `Host` on (README)."""
    headers = request.headers
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


def _client_host(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


# -- the ASGI app --------------------------------------------------------------------------------------


class RolePages:
    """ASGI: sends each request for the workbench to its role's Gradio app. Without a workbench role a
    browser asking for a page is redirected (raters to /arena/, everyone else to /login); anything else
    but Gradio's public static files (its JS and CSS build, fonts) gets 401, so no config, API info, queue
    or upload of a workbench page reaches them."""

    def __init__(self, sessions: Sessions, apps: dict[str, Any]) -> None:
        self.sessions = sessions
        self.apps = apps

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        conn = HTTPConnection(scope)
        user = self.sessions.user(conn.cookies.get(SESSION_COOKIE))
        role = user["role"] if user else None
        target = self.apps.get(role)
        if target is None and scope["type"] == "http" and STATIC_FILES.match(scope.get("path", "")):
            target = next(iter(self.apps.values()))  # Gradio's own JS, CSS and fonts: the same public files for all
        if target is not None:
            await target(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # a websocket without a session: not accepted
        if scope.get("method") == "GET" and scope.get("path", "/").rstrip("/") == "":
            await RedirectResponse(home_for(role), status_code=303)(scope, receive, send)
            return
        await JSONResponse({"detail": {"error": "Not authenticated", "auth_message": "Sign in at /login."}},
                           status_code=401)(scope, receive, send)


def _role_app(sessions: Sessions, blocks: gr.Blocks, role: str, max_file_size: str) -> Any:
    """A FastAPI app serving one role's Blocks; its auth dependency admits sessions of that role only."""
    def who(request: Any) -> str | None:
        user = sessions.from_request(request)
        return user["name"] if user and user["role"] == role else None

    with warnings.catch_warnings():  # "SSR mode is not supported with multi-page apps": we do not use SSR
        warnings.filterwarnings("ignore", message="SSR mode is not supported", category=UserWarning)
        return gr.mount_gradio_app(FastAPI(), calm_queue(blocks.queue(default_concurrency_limit=8)), path="",
                                   auth_dependency=who, max_file_size=max_file_size, **_look())


def server(db_path: str | Path, model: str = POLICY_DEFAULT, arena_pool: Any = None,
           login_policy: users.LoginPolicy | None = None, auth_off_loop: bool = True,
           secure_cookies: bool = False) -> Any:
    """The ASGI app: /login, the workbench at / (one page per role) and the rater page at /arena/.
    `arena_pool` serves the rater page's models (tests pass scripted ones); `login_policy` and
    `auth_off_loop=False` exist for bench/login.py's before/after comparison. The session cookie is `Secure`
    with `secure_cookies`, and on every request that came over https (directly, or from a trusted proxy)."""
    sessions = Sessions(db_path)
    role_apps = {role: _role_app(sessions, build_app(db_path, model, role), role, "5mb") for role in WORKBENCH_ROLES}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):  # type: ignore[no-untyped-def]
        async with contextlib.AsyncExitStack() as stack:  # each role's app starts its queue
            for sub in role_apps.values():
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    check = login_check(db_path, login_policy)
    landing = LandingAssets()

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Any:
        user = sessions.from_request(request)
        if user is not None:
            return RedirectResponse(home_for(user["role"]), status_code=303)
        message = "Sign in (users are managed with <code>cai users</code>)."
        return HTMLResponse(LOGIN_PAGE.replace("__MESSAGE__", message).replace("__PREFETCH__", landing.links()))

    @app.post("/login")
    async def login(request: Request) -> Any:
        if not same_origin(request):
            return JSONResponse({"detail": CROSS_SITE}, status_code=403)
        form = await request.form()
        name, password = str(form.get("username") or "").strip(), str(form.get("password") or "")
        address = _client_host(request)
        if auth_off_loop:  # each scrypt (~50 ms) on the event loop would stall every other request
            got = await anyio.to_thread.run_sync(check, name, password, address)
        else:
            got = check(name, password, address)
        if got.user is None:
            return JSONResponse({"detail": html.escape(got.message)}, status_code=400)
        response = JSONResponse({"success": True, "home": home_for(got.user["role"])})
        response.set_cookie(SESSION_COOKIE, sessions.open(got.user), httponly=True, samesite="lax", path="/",
                            secure=bool(secure_cookies) or request.url.scheme == "https")
        return response

    @app.get("/logout", response_class=HTMLResponse)
    def logout_page(request: Request) -> Any:
        """A GET never ends a session (an <img src=/logout> on any site could): the page's button POSTs."""
        if sessions.from_request(request) is None:
            return RedirectResponse("/login", status_code=303)
        return HTMLResponse(LOGOUT_PAGE)

    @app.post("/logout")
    def logout(request: Request) -> Any:
        if not same_origin(request):
            return JSONResponse({"detail": CROSS_SITE}, status_code=403)
        token = request.cookies.get(SESSION_COOKIE)
        if sessions.user(token) is None:
            return JSONResponse({"detail": "Not signed in."}, status_code=401)
        sessions.close(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    arena_page = calm_queue(arena.page_for(db_path, arena_pool, session=sessions.from_request)
                            .queue(default_concurrency_limit=8))
    app = gr.mount_gradio_app(app, arena_page, path="/arena", max_file_size="1kb", **_look())
    app.mount("/", RolePages(sessions, role_apps))
    return landing.wrap(Guard(app))


STATIC_FILES = re.compile(r"^(/arena)?/(assets|static)/")  # Gradio's frontend build and fonts: public, immutable


class LandingAssets:
    """Learns which static files (Gradio's JS and CSS chunks, fonts) each landing page loads, so that the sign-in
    page can prefetch them while the user types: a browser's first sign-in then finds its landing page's files
    in its cache (they are the same for everyone). The landing pages are `/` (admins, viewers) and `/arena/`
    (raters); a page's files are the static files its session asks for after it, until the session asks for
    another page or `window_s` passes. At most `cap` files per landing page."""

    LANDINGS = ("/", "/arena/")

    def __init__(self, window_s: float = 10.0, cap: int = 200) -> None:
        self.window_s, self.cap = window_s, cap
        self.files: dict[str, dict[str, None]] = {page: {} for page in self.LANDINGS}  # ordered sets
        self._open: dict[str, tuple[str, float]] = {}  # session token -> (landing page, until)

    def observe(self, path: str, token: str | None, now: float, page_load: bool = True) -> None:
        """A GET of `path` by the session `token` at `now` (monotonic seconds); `page_load`: the browser is
        loading it as a page (its `Sec-Fetch-Dest: document`)."""
        if not token:
            return
        if path in self.files and page_load:
            if len(self._open) > 1000:  # forget windows that have closed
                self._open = {t: w for t, w in self._open.items() if w[1] >= now}
            self._open[token] = (path, now + self.window_s)
        elif STATIC_FILES.match(path):
            page, until = self._open.get(token, ("", 0.0))
            if page and now <= until and len(self.files[page]) < self.cap:
                self.files[page][path] = None
        elif page_load:
            self._open.pop(token, None)  # another page: what it loads is not the landing page's

    def links(self) -> str:
        """`<link rel="prefetch">` for every file learnt, for the sign-in page's head."""
        return "".join(f'<link rel="prefetch" href="{html.escape(path)}">'
                       for files in self.files.values() for path in files)

    def wrap(self, app: Any) -> Any:
        """`app` as ASGI, with every GET observed."""
        async def observed(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope.get("method") == "GET":
                conn = HTTPConnection(scope)
                self.observe(scope.get("path", ""), conn.cookies.get(SESSION_COOKIE), time.monotonic(),
                             conn.headers.get("sec-fetch-dest", "document") == "document")
            await app(scope, receive, send)

        return observed


class Guard:
    """ASGI middleware: refuses uploads to the rater page (it takes no files, and a visitor with an invite
    code is anonymous until they redeem it), and turns a failed Gradio event stream (`/queue/data` for an
    unknown, ended or doubly-opened session: Gradio raises KeyError or HTTPException inside the stream) into
    one log line, where uvicorn would log a traceback per request (hundreds from one client)."""

    def __init__(self, app: Any, no_upload_prefix: str = "/arena/") -> None:
        self.app = app
        self.prefix = no_upload_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(self.prefix) and "/upload" in path[len(self.prefix):]:
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("The rater page takes no uploads.", status_code=403)(scope, receive, send)
            return
        if scope["type"] == "http" and path.endswith("/queue/data"):
            await self._stream(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _stream(self, scope: dict, receive: Any, send: Any) -> None:
        state = {"started": False, "done": False}

        async def sending(message: dict) -> None:
            state["started"] = state["started"] or message["type"] == "http.response.start"
            state["done"] = message["type"] == "http.response.body" and not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            session = HTTPConnection(scope).query_params.get("session_hash", "")[:40]
            log.warning("event stream refused: %s session=%r: %s", scope.get("path"), session,
                        f"{type(exc).__name__}: {exc}"[:200])
            if not state["started"]:
                await JSONResponse({"detail": "No such event stream."}, status_code=404)(scope, receive, send)
            elif not state["done"]:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


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


def launch(db_path: str | Path, model: str = POLICY_DEFAULT, *, host: str = "127.0.0.1", port: int = 7860,
           forwarded_allow_ips: str | None = None, secure_cookies: bool = False) -> None:
    """Serve the app until interrupted: listening at once, a loading page until it is built (`ui.warmup`)."""
    from ui.warmup import serve

    serve(lambda: server(db_path, model, secure_cookies=secure_cookies), host, port, banner(host, port),
          forwarded_allow_ips)


def banner(host: str, port: int) -> str:
    """The line that says where the workbench is (printed once the port is listening)."""
    return f"* Workbench at http://{host}:{port}/  (sign in at /login; rater page: http://{host}:{port}/arena/)"
