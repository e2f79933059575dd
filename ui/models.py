"""Models tab: the registry with each model's lineage, registering a model, and a quick chat with any of them.

Chat renders the conversation as an HH transcript (`cai.transcript.to_hh`) through the backend's own
`render` (raw for base models, chat template for chat models), streams the reply token by token as the arena
does, and cuts at the next "Human:" turn; a model's first use says it is loading, and for how long; loaded
backends come from the process's one `BackendPool` (`cai.backend_pool.shared_pool`) unless `build` is given one.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd
from sqlite_utils import Database

from cai import engines, load_eta, models
from cai.backend_pool import TURN_STOPS, BackendPool, complete_text, shared_pool, visible
from cai.backends.base import SamplingParams
from cai.queries import catalog
from cai.transcript import to_hh
from ui.common import BROWSE_ROLES, EDIT_ROLES, AppContext, bind, chat_safe, esc, on_page_load, require
from ui.lineage import lineage_html

MODEL_COLUMNS = ["id", "name", "path", "backend", "chat", "role", "parent", "run", "constitution", "created"]
HEALTH_COLUMNS = ["model", "endpoint", "ok", "detail"]


def registry_frame(db: Database) -> pd.DataFrame:
    rows = [
        {
            "id": r["id"], "name": r["name"], "path": r["path"], "backend": r["backend"],
            "chat": "yes" if r["chat"] else "no",
            "role": models.role_of(r["name"]) if r["path"] == r["name"] else "",  # embedded default, or alias
            "parent": r["parent"] or "", "run": r["run"] or "",
            "constitution": r["constitution"] or "", "created": (r["created_at"] or "")[:19].replace("T", " "),
        }
        for r in catalog.model_registry(db)
    ]
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def chat_prompt(history: list[dict[str, Any]], message: str) -> str:
    """The HH transcript for the next assistant turn."""
    turns = [{"role": m["role"], "content": _text(m["content"])} for m in history if m.get("role") in ("user", "assistant")]
    return to_hh([*turns, {"role": "user", "content": message.strip()}])


def _text(content: Any) -> str:
    """A message's text as typed or generated (the Chatbot holds it HTML-escaped, see `chat_safe`)."""
    if isinstance(content, list):  # Gradio 6 may hand back [{"type": "text", "text": ...}]
        content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return html.unescape(content if isinstance(content, str) else str(content))


# ----------------------------------------------------------------------------- handlers


def registry(ctx: AppContext, request: gr.Request) -> list[Any]:
    require(ctx, request, BROWSE_ROLES)
    db = ctx.db()
    rows = models.list_models(db)
    choices = [(f"{models.choice_label(db, m['name'])} (#{m['id']})", m["id"]) for m in rows]
    preferred = next((m["id"] for m in rows if m["name"] == ctx.model), choices[0][1] if choices else None)
    return [registry_frame(db), gr.Dropdown(choices=choices, value=preferred)]


def show_lineage(ctx: AppContext, model_id: float | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    return lineage_html(ctx.db(), int(model_id)) if model_id else "<p>Pick a model.</p>"


def register(
    ctx: AppContext, name: str, path: str, backend: str, chat: bool, request: gr.Request, endpoints: str = ""
) -> str:
    """Register a local model, or (with endpoints, one URL a line) a served one whose tokenizer is `path`."""
    require(ctx, request, EDIT_ROLES)
    name = (name or "").strip()
    urls = [u.strip() for u in (endpoints or "").splitlines() if u.strip()]
    try:
        if urls or backend == "served":
            model_id = models.register_served(ctx.db(), name, urls, tokenizer=(path or "").strip() or None, chat=chat)
        else:
            where = models.validated_path((path or "").strip() or name, models.model_roots(ctx.db_path.parent))
            model_id = models.register_model(ctx.db(), name, where, backend=backend, chat=chat)
    except (models.ModelError, FileNotFoundError) as exc:
        return f"Error: {esc(exc)}"
    return f"Registered {esc(name)} as model #{model_id}"


def toggle_serve(ctx: AppContext, model_id: float | None, on: bool, request: gr.Request) -> str:
    """Mark the picked model served by a shared vLLM engine (or not); what its engine is doing now."""
    require(ctx, request, EDIT_ROLES)
    if not model_id:
        return "Pick a model in the chat's model list first."
    name = models.get_model_by_id(ctx.db(), int(model_id))["name"]
    try:
        engines.set_serve(ctx.db(), name, bool(on))
    except models.ModelError as exc:
        return f"Error: {esc(exc)}"
    return esc(engines.describe(ctx.db(), name))


def endpoint_health(ctx: AppContext, request: gr.Request) -> pd.DataFrame:
    """Every served model's endpoints, each asked whether it answers (vLLM's /health, else /v1/models)."""
    require(ctx, request, BROWSE_ROLES)
    db = ctx.db()
    rows = [
        {"model": m["name"], **{**h, "ok": "yes" if h["ok"] else "no"}}
        for m in models.list_models(db) if m["backend"] == "served"
        for h in models.endpoint_health(db, m["name"])
    ]
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def chat_stream(
    ctx: AppContext, pool: BackendPool, model_id: float | None, history: list[dict[str, Any]], message: str,
    max_new_tokens: float, temperature: float, request: gr.Request,
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """One chat turn as it happens: (history, message box) after each change. A model not loaded yet first
    shows what it is waiting for and for about how long (cai.load_eta); the reply then streams token by token
    as the arena's do (cai.backend_pool.BackendPool.stream), cut at the next turn."""
    require(ctx, request, BROWSE_ROLES)
    if not model_id:
        raise gr.Error("Pick a model to chat with.")
    if not (message or "").strip():
        yield history, ""
        return
    row = models.get_model_by_id(ctx.db(), int(model_id))
    prompt = chat_prompt(history or [], message)
    asked = [*(history or []), {"role": "user", "content": chat_safe(message.strip(), markdown=False)}]

    def with_reply(text: str) -> list[dict[str, Any]]:
        return [*asked, {"role": "assistant", "content": chat_safe(text, markdown=False)}]

    if engines.flagged(ctx.db(), row["name"]) and not engines.route(ctx.db(), row["name"], start=False).served:
        yield with_reply(f"Starting the shared vLLM engine of {row['name']} (a minute or two on a CPU) ..."), ""
    row, path = engines.routed_row(ctx.db(), row)  # the shared engine, when the model has one
    if not pool.loaded(row):
        yield with_reply(" ".join(filter(None, [path, load_eta.notice(row)]))), ""
    try:
        backend, _ = pool.get(row)
    except Exception as exc:  # a missing folder or an unreachable hub id: say so on the page
        raise gr.Error(f"Could not load {row['name']}: {exc}") from None
    params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature), stop=TURN_STOPS)
    text = ""
    for text in pool.stream(backend, backend.render(prompt), params):  # batched with concurrent chats and raters
        yield with_reply(visible(complete_text(text), TURN_STOPS).strip()), ""
    yield with_reply(complete_text(visible(text, TURN_STOPS)).strip()), ""


def chat(
    ctx: AppContext, pool: BackendPool, model_id: float | None, history: list[dict[str, Any]], message: str,
    max_new_tokens: float, temperature: float, request: gr.Request,
) -> tuple[list[dict[str, Any]], str]:
    """One chat turn, finished: the model's reply appended to the history (and the input box cleared)."""
    *_, last = chat_stream(ctx, pool, model_id, history, message, max_new_tokens, temperature, request)
    return last


def _chat_handler(ctx: AppContext, pool: BackendPool):  # type: ignore[no-untyped-def]
    def handler(
        model_id: float | None, history: list[dict[str, Any]], message: str, max_new_tokens: float,
        temperature: float, request: gr.Request,
    ) -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield from chat_stream(ctx, pool, model_id, history, message, max_new_tokens, temperature, request)

    return handler


# ----------------------------------------------------------------------------- layout


def build(ctx: AppContext, pool: BackendPool | None = None) -> None:
    pool = pool or shared_pool()
    table = gr.Dataframe(pd.DataFrame(columns=MODEL_COLUMNS), interactive=False, wrap=True, max_height=300,
                         label="Registry (click a model for its lineage)", elem_id="models-table")
    with gr.Row():
        with gr.Column(scale=3):
            lineage_view = gr.HTML("<p>Pick a model.</p>")
        with gr.Column(scale=2), gr.Accordion("Register a model (admin)", open=False):
            r_name = gr.Textbox(label="Name")
            r_path = gr.Textbox(label="Path or hub id (empty: same as the name; served: its tokenizer)")
            r_endpoints = gr.Textbox(label="Endpoints of a served model (one URL a line, e.g. http://host:8000/v1)",
                                     lines=2)
            with gr.Row():
                r_backend = gr.Radio(["hf", "vllm", "served"], value="hf", label="Backend")
                r_chat = gr.Checkbox(label="Chat model (use its chat template)")
            r_btn = gr.Button("Register")
            r_msg = gr.Markdown()
    with gr.Accordion("Served endpoints", open=False):
        health_table = gr.Dataframe(pd.DataFrame(columns=HEALTH_COLUMNS), interactive=False, elem_id="health-table")
        health_btn = gr.Button("Check endpoints")
        with gr.Row():  # one vLLM engine per model, shared by runs, this chat and the arena (cai.engines)
            serve_box = gr.Checkbox(label="Serve the chat's model with a shared vLLM engine", elem_id="serve-toggle")
            serve_btn = gr.Button("Apply", scale=0)
        serve_msg = gr.Markdown(elem_id="serve-status")
    gr.Markdown("### Quick chat")
    with gr.Row():
        model = gr.Dropdown([], label="Model", scale=2)
        max_new = gr.Slider(8, 512, value=128, step=8, label="Max new tokens", scale=2)
        temp = gr.Slider(0.0, 1.5, value=0.0, step=0.1, label="Temperature (0 = greedy)", scale=2)
    bot = gr.Chatbot(label="Conversation", height=360, sanitize_html=True, render_markdown=False,
                     elem_id="chat-box")
    with gr.Row():
        msg = gr.Textbox(label="Message", placeholder="Ask something and press Enter", scale=5)
        send = gr.Button("Send", variant="primary", scale=0)
        clear = gr.Button("Clear", scale=0)

    def pick(evt: gr.SelectData) -> int | None:
        return int(evt.row_value[0]) if evt.row_value else None

    picked = gr.Number(visible=False)
    table.select(pick, None, picked).then(bind(show_lineage, ctx), picked, lineage_view).then(
        lambda m: m, picked, model)
    do_reg = bind(registry, ctx)
    def do_register(name: str, path: str, backend: str, chat_: bool, endpoints: str, request: gr.Request) -> str:
        return register(ctx, name, path, backend, chat_, request, endpoints)

    r_btn.click(do_register, [r_name, r_path, r_backend, r_chat, r_endpoints], r_msg).then(
        do_reg, None, [table, model])
    health_btn.click(bind(endpoint_health, ctx), None, health_table)
    serve_btn.click(bind(toggle_serve, ctx), [model, serve_box], serve_msg)
    on_page_load(do_reg, None, [table, model])
    handler = _chat_handler(ctx, pool)
    send.click(handler, [model, bot, msg, max_new, temp], [bot, msg])
    msg.submit(handler, [model, bot, msg, max_new, temp], [bot, msg])
    clear.click(lambda: [], None, bot)
