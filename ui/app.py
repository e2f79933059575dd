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

import importlib
from pathlib import Path
from typing import Any

import gradio as gr

from cai import store, users
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


def auth_function(db_path: str | Path):  # type: ignore[no-untyped-def]
    """Gradio's login check over the users table (scrypt hashes in `cai.users`)."""

    def check(name: str, password: str) -> bool:
        db = store.connect(db_path)
        try:
            return users.authenticate(db, name, password) is not None
        finally:
            db.close()

    return check


def server(db_path: str | Path, model: str = "default") -> Any:
    """The ASGI app: the rater page at /arena (its own sign-in, invite codes) and the workbench at / behind
    Gradio's login over the users table."""
    from fastapi import FastAPI

    app = FastAPI()
    arena_page = arena.page_for(db_path).queue(default_concurrency_limit=8)
    app = gr.mount_gradio_app(app, arena_page, path="/arena", **_look())
    demo = build_app(db_path, model).queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(
        app,
        demo,
        path="",
        auth=auth_function(db_path),
        auth_message="Constitutional AI Workbench: sign in (users are managed with `cai users`).",
        max_file_size="5mb",
        **_look(),
    )


def _look() -> dict[str, Any]:
    return {"css": CSS, "theme": gr.themes.Soft(), "footer_links": [], "ssr_mode": False, "show_error": True}


def launch(db_path: str | Path, model: str = "default", *, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the app until interrupted."""
    import uvicorn

    print(f"* Workbench at http://{host}:{port}/  (rater page: http://{host}:{port}/arena/)", flush=True)
    uvicorn.run(server(db_path, model), host=host, port=port, log_level="warning")
