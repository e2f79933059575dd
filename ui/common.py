"""What every tab shares: the app context (database path, default model), roles and safe HTML.

Handlers get an `AppContext` and the `gr.Request`; `require(ctx, request, ...)` enforces roles in the
handler itself, so a hidden button is never the only guard, and everything user- or model-written
that reaches gr.HTML passes through `esc` or `diff_html` (text is escaped before any markup is added).
"""

from __future__ import annotations

import difflib
import html
import inspect
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from sqlite_utils import Database

from cai import store, users
from cai.backends.builtin import POLICY_DEFAULT

EDIT_ROLES = ("admin",)
BROWSE_ROLES = ("admin", "viewer")
ARENA_ROLES = ("admin", "rater")
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


@dataclass
class AppContext:
    """Shared by all tabs of one app: where the database is and which model chat/preview defaults to."""

    db_path: Path
    model: str = POLICY_DEFAULT
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def db(self) -> Database:
        """A connection for the calling thread (sqlite3 connections must not cross threads)."""
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = store.connect(self.db_path)
        return conn


def _like(fn: Callable[..., Any], handler: Callable[..., Any], drop_first: bool) -> Callable[..., Any]:
    """Give `handler` fn's signature and type hints (Gradio injects `gr.Request` by annotation)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    hints = typing.get_type_hints(fn)
    if drop_first:
        hints.pop(params[0].name, None)
        params = params[1:]
    handler.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    handler.__annotations__ = hints
    handler.__name__ = handler.__qualname__ = fn.__name__
    return handler


def bind(fn: Callable[..., Any], ctx: AppContext) -> Callable[..., Any]:
    """`fn(ctx, ...)` as an event handler `(...)` (functools.partial would hide the annotations)."""

    def handler(*args: Any, **kwargs: Any) -> Any:
        return fn(ctx, *args, **kwargs)

    return _like(fn, handler, drop_first=True)


def quietly(fn: Callable[..., Any], n_outputs: int) -> Callable[..., Any]:
    """`fn` for events nobody clicked (page loads, timers): a role refusal leaves the outputs as they are
    instead of raising an error toast (a rater's page holds every tab's hooks and timers)."""

    def quiet(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            skips = [gr.skip() for _ in range(n_outputs)]
            return skips if n_outputs != 1 else skips[0]

    return _like(fn, quiet, drop_first=False)


def on_page_load(fn: Callable[..., Any], inputs: list[Any] | None, outputs: list[Any]) -> Any:
    """Run `fn` each time the page loads (fresh choices, first page), from inside a page's build(); quietly.
    Returns the event, for `.then(...)`."""
    root = gr.context.Context.root_block
    if root is None:
        raise RuntimeError("on_page_load must be called inside a gr.Blocks context")
    return root.load(quietly(fn, len(outputs)), inputs, outputs, queue=False)


def clip(text: str, n: int) -> str:
    """`text` on one line (runs of whitespace as one space), cut to `n` characters with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def role(ctx: AppContext, request: gr.Request | None) -> str | None:
    return users.role_of(ctx.db(), username(request))


def require(ctx: AppContext, request: gr.Request | None, roles: tuple[str, ...]) -> str:
    """The user's name when their role is one of `roles`; else a gr.Error the page shows."""
    name = username(request)
    got = users.role_of(ctx.db(), name)
    if got not in roles:
        who = f"{name} ({got})" if name else "anonymous"
        raise gr.Error(f"Not allowed: this needs the {' or '.join(roles)} role; you are {who}.")
    return name  # type: ignore[return-value]


def esc(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def chat_safe(text: Any, markdown: bool = True) -> str:
    """Model (or user) text for a gr.Chatbot message, shown as the characters it is: HTML is escaped, so no
    tag (an <img> that calls a tracking URL or shows a logo) reaches the page, and with markdown on, image
    syntax is defused ("![x](url)" stays text), so no remote image is fetched either."""
    out = html.escape("" if text is None else str(text), quote=False)
    return out.replace("![", "!\\[") if markdown else out


def pre(text: Any, cls: str = "cai-text") -> str:
    """Model or user text as an escaped, wrapped block."""
    return f'<div class="{cls}">{esc(text)}</div>'


def diff_html(old: str, new: str) -> str:
    """Word-level changes from `old` to `new` as HTML: deletions struck, insertions marked; all escaped.

    Changes separated only by whitespace or a tiny word ("a", "for") are shown as one change, and a
    near-total rewrite as the old text struck then the new, so a rewrite reads as two sentences, not confetti.
    """
    a, b = _words(old or ""), _words(new or "")
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    if matcher.ratio() < 0.3:
        segments = [["change", old or "", new or ""]]
    else:
        segments = [
            ["same" if op == "equal" else "change", "".join(a[i1:i2]), "".join(b[j1:j2])]
            for op, i1, i2, j1, j2 in matcher.get_opcodes()
        ]
        for i in range(1, len(segments) - 1):
            kind, text, _ = segments[i]
            if kind == "same" and segments[i - 1][0] == segments[i + 1][0] == "change" and len(text.strip()) <= 3:
                segments[i][0] = "change"
    merged: list[list[str]] = []
    for seg in segments:
        if merged and merged[-1][0] == seg[0] == "change":
            merged[-1][1] += seg[1]
            merged[-1][2] += seg[2]
        else:
            merged.append(list(seg))
    out = []
    for kind, before, after in merged:
        if kind == "same":
            out.append(esc(before))
            continue
        if before:
            out.append(f"<del>{esc(before)}</del>")
        if after:
            out.append(f"<ins>{esc(after)}</ins>")
    return f'<div class="cai-text">{"".join(out)}</div>'


def _words(text: str) -> list[str]:
    """Split keeping whitespace apart, so joining the pieces gives the text back exactly."""
    return re.findall(r"\s+|[^\s]+", text)


def read_upload(path: str | None, *, allowed: tuple[str, ...], limit: int = MAX_UPLOAD_BYTES) -> Path:
    """Validate an uploaded file: present, a permitted extension, not too large."""
    if not path:
        raise gr.Error("Choose a file first.")
    p = Path(path)
    if not p.name.lower().endswith(allowed):
        raise gr.Error(f"{p.name}: expected a {' or '.join(allowed)} file.")
    size = p.stat().st_size
    if size > limit:
        raise gr.Error(f"{p.name}: {size / 1e6:.1f} MB is over the {limit / 1e6:.0f} MB upload limit.")
    return p


CSS = """
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
  clip: rect(0, 0, 0, 0); white-space: nowrap; border: 0; }
.cai-reveal { font-size: 1.15em; font-weight: 600; padding: 8px 12px; border-radius: 8px;
  background: var(--color-accent-soft); }
.cai-text { white-space: pre-wrap; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: 0.88em; line-height: 1.45; padding: 8px 10px; border-radius: 6px;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.cai-text del { background: #fdd; color: #a00; text-decoration: line-through; }
.cai-text ins { background: #dfd; color: #060; text-decoration: none; }
.cai-step { margin: 10px 0 14px 0; }
.cai-step h4 { margin: 0 0 4px 0; font-size: 0.95em; }
.cai-step .cai-meta { color: var(--body-text-color-subdued); font-size: 0.85em; font-weight: normal; }
.cai-badge { display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 0.8em;
  background: var(--color-accent-soft); margin-left: 6px; }
.cai-mono textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85em; }
.cai-diff-old { background: #fff4f4; } .cai-diff-new { background: #f4fff4; }
#home-overview .cai-home, #home-overview .cai-home tr { border: none !important; }
#home-overview .cai-home { border-collapse: collapse; margin: 6px 0 12px 0; }
#home-overview .cai-home th, #home-overview .cai-home td { border: 0; padding: 7px 22px 7px 0; text-align: left;
  vertical-align: top; border-bottom: 1px solid var(--border-color-primary); background: none; }
#home-overview .cai-home th { white-space: nowrap; }
"""
