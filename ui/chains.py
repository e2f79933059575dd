"""Chains tab: filter and page through SL chains on the server, then read one step by step.

Pages come from `cai.queries.chains.chain_page` (SQL LIMIT/OFFSET over indexes), so 100,000 chains cost the
browser one page; a chain (`cai.sl.get_chain`) reads initial response -> critique -> revision with each
revision's changes marked (escaped difflib).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
from sqlite_utils import Database

from cai import store
from cai.queries.chains import ChainFilter, ChainPage, chain_page, filter_options
from cai.sl import FLAG_MEANINGS, get_chain
from cai.transcript import last_human_turn
from ui.common import BROWSE_ROLES, AppContext, bind, clip, diff_html, esc, on_page_load, pre, require

NO_CHAINS = ("No chains yet: launch “SL chains (critique → revision)” from the Dashboard, or "
             "`cai run sl --prompts sample-red-team --model tiny`.")


def flag_legend() -> str:
    """What each flag in the table and on the steps means (the same words as the run log)."""
    return "**Flags** (a step's output is unusable as is): " + " · ".join(
        f"**{name}**: {meaning}" for name, meaning in FLAG_MEANINGS.items())
COLUMNS = ["id", "run", "model", "constitution", "mode", "revisions", "flags", "prompt", "final"]


def page_frame(p: ChainPage) -> pd.DataFrame:
    rows = [
        {
            "id": r["id"],
            "run": r["run_id"],
            "model": r["model"] or "",
            "constitution": r["constitution"] or "",
            "mode": r["mode"] or "",
            "revisions": r["n_revisions"],
            "flags": flag_summary(store.loads(r["flags"], [])),
            "prompt": clip(last_human_turn(r["prompt_tail"] or ""), 120),
            "final": clip((r["final"] or "").strip(), 120),
        }
        for r in p.rows
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def flag_summary(flags: list[str]) -> str:
    """Step flags ("critique1:truncated", ...) as kinds with counts: "truncated ×5, empty"."""
    counts: dict[str, int] = {}
    for f in flags:
        kind = f.rsplit(":", 1)[-1]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in sorted(counts.items()))


def filter_choices(db: Database) -> dict[str, list[tuple[str, Any]]]:
    """Dropdown choices for the filters (runs, models, versions, principles), each starting with "(any)"."""
    o = filter_options(db)
    anyone = [("(any)", "")]
    return {
        "run": anyone + [(f"#{r['id']} · {r['status']} · {(r['created_at'] or '')[:16].replace('T', ' ')}",
                          str(r["id"])) for r in o["runs"]],
        "model": anyone + [(r["name"], str(r["id"])) for r in o["models"]],
        "version": anyone + [(f"{r['name']} v{r['version']}", str(r["id"])) for r in o["versions"]],
        "principle": anyone + [(r["name"], r["name"]) for r in o["principles"]],
    }


def _score(value: float | None) -> str:
    return "" if value is None else f'<span class="cai-badge">PM score {value:+.3f}</span>'


def _flags(flags: list[str]) -> str:
    """Flag badges, each with its meaning as a tooltip."""
    return "".join(
        f'<span class="cai-badge" title="{esc(FLAG_MEANINGS.get(f.split(":")[-1], ""))}">{esc(f)}</span>'
        for f in flags or [])


def chain_html(chain: dict[str, Any]) -> str:
    """The chain (as `cai.sl.get_chain` reads it) in reading order; every model or user text is escaped,
    revisions show their changes."""
    parts = [
        f'<div class="cai-step"><h4>Chain {chain["id"]} <span class="cai-meta">run #{chain["run_id"]} · '
        f'{esc(chain["mode"])} · sample {chain["sample"]}</span>{_flags(chain["flags"])}</h4></div>',
        f'<div class="cai-step"><h4>Prompt</h4>{pre(chain["prompt"].strip())}</div>',
    ]
    previous: str | None = None
    for s in chain["steps"]:
        output = (s["output"] or "").strip()
        if s["kind"] == "initial":
            title, body = "Initial response", pre(output)
        elif s["kind"] == "critique":
            title, body = f"Critique {s['round']}", pre(output)
        else:
            title = f"Revision {s['round']}"
            if previous == output and "unchanged" not in s["flags"]:  # chains stored before the flag existed
                title += ' <span class="cai-badge">unchanged</span>'
            body = diff_html(previous or "", output) if previous is not None else pre(output)
        principle = f' <span class="cai-meta">· principle: {esc(s["principle"])}</span>' if s["principle"] else ""
        sent = f"<details><summary>Exact text sent to the model</summary>{pre(s['sent'])}</details>"
        parts.append(
            f'<div class="cai-step"><h4>{title}{principle}{_score(s["pm_score"])}{_flags(s["flags"])}</h4>'
            f"{body}{sent}</div>"
        )
        if s["kind"] in ("initial", "revision"):
            previous = output
    return "\n".join(parts)


# ----------------------------------------------------------------------------- handlers


def _filter(run: str, model: str, version: str, principle: str, text: str) -> ChainFilter:
    """The filter form as a ChainFilter; a value SQLite cannot take (not an id, a NUL) is a gr.Error."""

    def num(what: str, v: Any) -> int | None:
        if v in (None, ""):
            return None
        try:
            value = int(v)
        except (TypeError, ValueError):
            raise gr.Error(f"{what}: {str(v)[:40]!r} is not an id.") from None
        if not 1 <= value < 2**63:
            raise gr.Error(f"{what}: {value} is not a valid id.")
        return value

    for what, v in (("Principle", principle), ("Search text", text)):
        if v and "\x00" in str(v):
            raise gr.Error(f"{what}: contains a NUL character.")
    return ChainFilter(num("Run", run), num("Model", model), num("Constitution version", version),
                       str(principle or ""), str(text or ""))


def search(
    ctx: AppContext, run: str, model: str, version: str, principle: str, text: str, page: float,
    request: gr.Request,
) -> tuple[pd.DataFrame, str, int]:
    """A page of the filtered chains: table, a 'page x of y' line, and the clamped page number."""
    require(ctx, request, BROWSE_ROLES)
    f = _filter(run, model, version, principle, text)
    p = chain_page(ctx.db(), f, int(page or 1))
    if p.total == 0 and f == ChainFilter():
        return page_frame(p), NO_CHAINS, p.page
    return page_frame(p), f"Page {p.page} of {p.pages} · {p.total:,} chains", p.page


def open_chain(ctx: AppContext, chain_id: float | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not chain_id:
        return "<p>Pick a chain in the table (or type its id) to read it here.</p>"
    if not 1 <= int(chain_id) < 2**63:
        raise gr.Error(f"Chain {int(chain_id)}: not a valid id.")
    try:
        return chain_html(get_chain(ctx.db(), int(chain_id)))
    except LookupError as exc:
        raise gr.Error(str(exc)) from None


def refresh_choices(ctx: AppContext, request: gr.Request) -> list[Any]:
    require(ctx, request, BROWSE_ROLES)
    c = filter_choices(ctx.db())
    return [gr.Dropdown(choices=c[k]) for k in ("run", "model", "version", "principle")]


def build(ctx: AppContext) -> None:
    with gr.Row():
        run = gr.Dropdown([("(any)", "")], value="", label="Run", scale=1)
        model = gr.Dropdown([("(any)", "")], value="", label="Model", scale=1)
        version = gr.Dropdown([("(any)", "")], value="", label="Constitution version", scale=1)
        principle = gr.Dropdown([("(any)", "")], value="", label="Principle", scale=1)
        text = gr.Textbox(label="Search prompt and final text", placeholder="words to match", scale=2)
    with gr.Row():
        go = gr.Button("Search", variant="primary", scale=0)
        prev = gr.Button("◀ Previous", scale=0)
        nxt = gr.Button("Next ▶", scale=0)
        info = gr.Markdown("", elem_id="chains-info")
    page = gr.State(1)
    table = gr.Dataframe(
        pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, max_height=520,
        column_widths=["5%", "5%", "9%", "10%", "7%", "6%", "8%", "25%", "25%"], elem_id="chains-table",
    )
    gr.Markdown(flag_legend(), elem_id="flag-legend")
    with gr.Row():
        chain_id = gr.Number(None, label="Chain id", precision=0, scale=0, min_width=140, elem_id="chain-id-box")
        open_btn = gr.Button("Open chain", scale=0)
    view = gr.HTML("<p>Pick a chain in the table (or type its id) to read it here.</p>", elem_id="chain-view")

    filters = [run, model, version, principle, text]
    do_search = bind(search, ctx)
    go.click(lambda: 1, None, page).then(do_search, [*filters, page], [table, info, page])
    text.submit(lambda: 1, None, page).then(do_search, [*filters, page], [table, info, page])
    for dd in (run, model, version, principle):
        dd.input(lambda: 1, None, page).then(do_search, [*filters, page], [table, info, page])
    prev.click(lambda p: max(1, p - 1), page, page).then(do_search, [*filters, page], [table, info, page])
    nxt.click(lambda p: p + 1, page, page).then(do_search, [*filters, page], [table, info, page])

    def pick(evt: gr.SelectData) -> int | None:
        row = evt.row_value
        return int(row[0]) if row else None

    table.select(pick, None, chain_id).then(bind(open_chain, ctx), chain_id, view)
    open_btn.click(bind(open_chain, ctx), chain_id, view)
    chain_id.submit(bind(open_chain, ctx), chain_id, view)
    on_page_load(bind(refresh_choices, ctx), None, [run, model, version, principle])
    on_page_load(do_search, [*filters, page], [table, info, page])
