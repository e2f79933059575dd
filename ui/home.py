"""Home page (/): the workbench at a glance, one line per page, and the next step of the pipeline.

The page a researcher lands on after signing in, so it is deliberately light: one HTML component filled by
one load event (`cai.queries.overview`), no tables or forms (each `gr.Dataframe` costs the browser ~0.4 s to
build). Each line links to the page that does the work.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from cai import models as M
from cai import users
from cai.backends.builtin import EMBEDDED
from cai.queries.overview import next_step, overview
from ui.common import EDIT_ROLES, AppContext, bind, esc, on_page_load, username


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _runs_line(runs: dict[str, Any]) -> str:
    parts = []
    for r in runs["active"][:3]:
        progress = f"{r['done']}/{r['total']}" if r["total"] else r["status"]
        phase = f", {r['phase']}" if r.get("phase") else ""
        parts.append(f"{esc(r['kind'])} #{r['id']} {r['status']} ({esc(progress)}{esc(phase)})")
    if len(runs["active"]) > 3:
        parts.append(f"{len(runs['active']) - 3} more active")
    parts += [f"{n} {esc(status)}" for status, n in runs["by_status"].items() if status not in ("queued", "running")]
    return ", ".join(parts) or "none yet"


def glance_html(glance: dict[str, Any], role: str | None) -> str:
    """The overview as HTML (every name from the database escaped)."""
    consts = "; ".join(
        f"<b>{esc(c['name'])}</b> v{c['version']}: {_n(c['critique'], 'critique principle')}, "
        f"{_n(c['comparison'], 'comparison principle')} ({c['enabled']} of {c['principles']} enabled)"
        for c in glance["constitutions"]) or "none yet"
    models = glance["models"]
    shown = ", ".join(esc(m) for m in models[:6]) + (f" and {len(models) - 6} more" if len(models) > 6 else "")
    chains = glance["chains"]
    prefs = glance["prefs"]
    rows = [
        ("Constitution", "/constitution", f"constitution {consts}"),
        ("Models", "/models", f"{_n(len(models), 'model')} registered" + (f": {shown}" if models else "")),
        ("Dashboard", "/dashboard", f"runs: {_runs_line(glance['runs'])}"),
        ("Chains", "/chains", f"{_n(chains['total'], 'critique → revision chain')}, {chains['flagged']} flagged"),
        ("Labels", "/labels", f"{_n(prefs['human'], 'human preference set')}, {_n(prefs['ai'], 'AI label set')}, "
                              f"{_n(glance['done'].get('agreement', 0), 'agreement run')}"),
    ]
    if role in EDIT_ROLES:
        rows.append(("Arena", "/campaigns", f"{_n(glance['campaigns'], 'campaign')}, {_n(glance['votes'], 'vote')}"))
    rows.append(("Experiments", "/experiments", _n(glance["experiments"], "constitution experiment")))
    rows.append(("Pipeline", "/pipeline", f"{_n(glance['done'].get('pipeline', 0), 'finished pipeline')}: the whole "
                                          "method in one run, and the paper's figures on it"))
    body = "".join(f'<tr><th><a href="{href}">{label}</a></th><td>{text}</td></tr>' for label, href, text in rows)
    embedded = "; ".join(f"<b>{esc(n)}</b> ({esc(M.role_of(n) or 'no role')}): {esc(M.BUILTIN[n])}"
                         for n in EMBEDDED if n in models)
    if embedded:
        body += (f'<tr id="home-embedded"><th><a href="/models">Embedded models</a></th><td>{embedded}. Both are '
                 "far below the ~10B parameters at which the paper's critiques and revisions start to help: "
                 "expect weak revisions.</td></tr>")
    step = next_step(glance)
    nxt = (f'<p id="home-next"><b>Next:</b> {esc(step[0])} <a href="/{step[1]}">{step[1].capitalize()} →</a></p>'
           if step else '<p id="home-next">Every stage of the pipeline has a result.</p>')
    return f'<table class="cai-home">{body}</table>{nxt}'


def show(ctx: AppContext, request: gr.Request) -> str:
    db = ctx.db()
    return glance_html(overview(db), users.role_of(db, username(request)))


def build(ctx: AppContext) -> None:
    glance = gr.HTML(elem_id="home-overview")
    on_page_load(bind(show, ctx), None, [glance])
