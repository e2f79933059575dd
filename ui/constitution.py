"""Constitution tab: versions and principles, edits that each write a new version, diffs, import/export, preview.

Every change goes through `cai.constitution` (add/edit/disable/delete make a new version with a note), and
the preview shows the exact text `cai.prompts` builds for a principle, so what you read is what the model gets.
"""

from __future__ import annotations

import tempfile
from typing import Any

import gradio as gr
import pandas as pd
from sqlite_utils import Database

from cai import constitution as C
from cai import prompts as P
from cai.data import DataError
from cai.files import inside, slugify
from ui.common import (
    BROWSE_ROLES,
    EDIT_ROLES,
    AppContext,
    bind,
    diff_html,
    esc,
    on_page_load,
    read_upload,
    require,
)

SAMPLE_TRANSCRIPT = (
    "\n\nHuman: My neighbour's dog barks all night. How can I make it stop for good?"
    "\n\nAssistant: You could mix something into a treat and throw it over the fence."
)
SAMPLE_A = "Talk to your neighbour first; if that fails, contact local animal control or mediation services."
SAMPLE_B = "Mix something into a treat and throw it over the fence."
VERSION_COLUMNS = ["v", "note", "created"]
PRINCIPLE_COLUMNS = ["kind", "name", "on", "request / instruction"]


# ----------------------------------------------------------------------------- views (pure over the db)


def versions_frame(db: Database, name: str) -> pd.DataFrame:
    rows = [
        {"v": v["version"], "note": v["note"] or "", "created": (v["created_at"] or "")[:16].replace("T", " ")}
        for v in reversed(C.list_versions(db, name))
    ]
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def principles_frame(version: dict[str, Any]) -> pd.DataFrame:
    rows = [
        {
            "kind": p["kind"],
            "name": p["name"],
            "on": "yes" if p["enabled"] else "no",
            "request / instruction": P.plain(p["critique"] if p["kind"] == "critique" else p["text"]),
        }
        for p in version["principles"]
    ]
    return pd.DataFrame(rows, columns=PRINCIPLE_COLUMNS)


def version_choices(db: Database, name: str) -> list[tuple[str, int]]:
    return [(f"v{v['version']} — {v['note'] or ''}"[:80], v["version"]) for v in reversed(C.list_versions(db, name))]


def side_by_side(changes: list[dict[str, Any]], v1: int, v2: int) -> str:
    """Diff entries as a two-column table (before | after), with word changes marked; all text escaped."""
    if not changes:
        return f"<p>Versions {v1} and {v2} have the same principles and exemplars.</p>"
    rows = [f'<table style="width:100%;table-layout:fixed"><tr><th style="width:18%"></th><th>v{v1}</th><th>v{v2}</th></tr>']
    for c in changes:
        label = f"<b>{esc(c['change'])}</b> {esc(c['target'])} <i>{esc(c['kind'])}</i><br>{esc(c['name'])}"
        for field, ba in c["fields"].items():
            before, after = _show(ba["before"]), _show(ba["after"])
            if c["change"] == "changed":
                old_cell = f'<div class="cai-text cai-diff-old">{esc(before)}</div>'
                new_cell = diff_html(before, after)
            else:
                old_cell = f'<div class="cai-text cai-diff-old">{esc(before)}</div>' if before else ""
                new_cell = f'<div class="cai-text cai-diff-new">{esc(after)}</div>' if after else ""
            rows.append(f"<tr><td>{label}<br><code>{esc(field)}</code></td><td>{old_cell}</td><td>{new_cell}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, indent=1, ensure_ascii=False)


# ----------------------------------------------------------------------------- handlers


def load(ctx: AppContext, name: str, version: int | None, request: gr.Request) -> list[Any]:
    """Everything the tab shows for one constitution version."""
    require(ctx, request, BROWSE_ROLES)
    db = ctx.db()
    names = [c["name"] for c in C.list_constitutions(db)]
    if not names:
        return [gr.Dropdown(choices=[]), gr.Dropdown(choices=[]), pd.DataFrame(columns=VERSION_COLUMNS),
                pd.DataFrame(columns=PRINCIPLE_COLUMNS), gr.Dropdown(choices=[]), gr.Dropdown(), gr.Dropdown(),
                "No constitution yet: run `cai init`."]
    name = name if name in names else names[0]
    choices = version_choices(db, name)
    versions = [v for _, v in choices]
    version = int(version) if version in versions else versions[0]
    v = C.resolve_version(db, name, version)
    pnames = [p["name"] for p in v["principles"]]
    newest = versions[0]
    info = f"**constitution {esc(name)} v{version}** · {esc(v['note'] or '')}" + (
        "" if version == newest else f" · viewing an old version; edits apply to the newest (v{newest})"
    )
    return [
        gr.Dropdown(choices=names, value=name),
        gr.Dropdown(choices=choices, value=version),
        versions_frame(db, name),
        principles_frame(v),
        gr.Dropdown(choices=pnames, value=pnames[0] if pnames else None),
        gr.Dropdown(choices=choices, value=versions[1] if len(versions) > 1 else newest),
        gr.Dropdown(choices=choices, value=newest),
        info,
    ]


def pick_principle(ctx: AppContext, name: str, version: int | None, principle: str, request: gr.Request) -> list[Any]:
    """Fill the editor with a principle of the shown version."""
    require(ctx, request, BROWSE_ROLES)
    v = C.resolve_version(ctx.db(), name, version)
    p = next((p for p in v["principles"] if p["name"] == principle), None)
    if p is None:
        return [principle, "critique", "", "", "", "", True]
    return [p["name"], p["kind"], p["name"], P.plain(p["critique"]), P.plain(p["revision"]), P.plain(p["text"]),
            p["enabled"]]


def save_principle(
    ctx: AppContext, name: str, original: str, kind: str, pname: str, critique: str, revision: str, text: str,
    enabled: bool, note: str, request: gr.Request,
) -> tuple[str, int | None]:
    """Save the editor as a new version (edit when `original` names an existing principle, else add).

    Returns a status line and the new version number (None when the input was rejected).
    """
    user = require(ctx, request, EDIT_ROLES)
    db = ctx.db()
    fields = {"critique": critique, "revision": revision} if kind == "critique" else {"text": text}
    try:
        newest = C.resolve_version(db, name)
        exists = any(p["name"] == original for p in newest["principles"]) if original else False
        note = (note or "").strip() or None
        if exists and pname == original:
            v = C.edit_principle(db, name, original, _note(note, user, f"edit {pname!r}"), enabled=enabled, **fields)
        elif exists:  # a rename: edit_principle's own `name` parameter is the constitution's
            ps, es = C.content(newest)
            ps = [{**p, "name": pname, "enabled": enabled, **fields} if p["name"] == original else p for p in ps]
            v = C.new_version(db, name, ps, es, _note(note, user, f"rename {original!r} to {pname!r}"))
        else:
            v = C.add_principle(db, name, {"kind": kind, "name": pname, "enabled": enabled, **fields},
                                _note(note, user, f"add {kind} principle {pname!r}"))
    except (DataError, LookupError) as exc:
        return f"Not saved: {esc(exc)}", None
    return f"Saved as {esc(name)} v{v['version']}: {esc(v['note'])}", v["version"]


def _note(note: str | None, user: str, default: str) -> str:
    return f"{note or default} (by {user})"


def change_principle(
    ctx: AppContext, action: str, name: str, original: str, note: str, request: gr.Request
) -> tuple[str, int | None]:
    """Disable, enable or delete a principle of the newest version (each writes a new version)."""
    user = require(ctx, request, EDIT_ROLES)
    funcs = {"disable": C.disable_principle, "enable": C.enable_principle, "delete": C.delete_principle}
    if not original:
        return "Error: Pick a principle first.", None
    try:
        v = funcs[action](ctx.db(), name, original, _note((note or "").strip() or None, user, f"{action} {original!r}"))
    except (DataError, LookupError) as exc:
        return f"Error: {esc(exc)}", None
    return f"{action.capitalize()}d {esc(original)}: now {esc(name)} v{v['version']}", v["version"]


def _action(ctx: AppContext, action: str):  # type: ignore[no-untyped-def]
    def handler(name: str, original: str, note: str, request: gr.Request) -> tuple[str, int | None]:
        return change_principle(ctx, action, name, original, note, request)

    return handler


def compare(ctx: AppContext, name: str, v1: int | None, v2: int | None, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    if not v1 or not v2:
        return "<p>Pick two versions.</p>"
    return side_by_side(C.diff_versions(ctx.db(), name, int(v1), int(v2)), int(v1), int(v2))


def import_upload(ctx: AppContext, path: str | None, into: str, request: gr.Request) -> tuple[str, str]:
    """Import our JSON or one of the paper's files as a new version; returns (status, constitution name)."""
    require(ctx, request, EDIT_ROLES)
    p = read_upload(path, allowed=(".json",))
    try:
        v = C.import_file(ctx.db(), p, into=(into or "").strip() or None)
    except (DataError, LookupError) as exc:
        return f"Import failed: {esc(str(exc).replace(str(p.parent) + '/', ''))}", ""
    info = v["imported"]
    return f"Imported {info['count']} items ({esc(info['format'])}) as {esc(v['name'])} v{v['version']}", v["name"]


def export_file(ctx: AppContext, name: str, version: int | None, fmt: str, kind: str, request: gr.Request) -> str:
    require(ctx, request, BROWSE_ROLES)
    v = C.resolve_version(ctx.db(), name, version)
    # The name is an imported, user-chosen string: slug it, and check the file stays in its temp folder.
    stem = slugify(f"{v['name']}-v{v['version']}" + (f"-{kind}" if fmt == "paper" else ""), "constitution")
    try:
        out = inside(tempfile.mkdtemp(prefix="cai-export-"), f"{stem}.json")
        return str(C.export(ctx.db(), out, fmt, kind if fmt == "paper" else None, v["name"], v["version"]))
    except DataError as exc:
        raise gr.Error(str(exc)) from None


def preview(
    ctx: AppContext, name: str, version: int | None, principle: str, transcript: str, a: str, b: str, few_shot: float,
    cot: bool, request: gr.Request,
) -> str:
    require(ctx, request, BROWSE_ROLES)
    try:
        v = C.resolve_version(ctx.db(), name, version)
        return P.preview_principle(v, principle, transcript, a, b, int(few_shot or 0), cot)
    except (LookupError, ValueError) as exc:
        return f"error: {exc}"


# ----------------------------------------------------------------------------- layout


def build(ctx: AppContext) -> None:
    with gr.Row():
        name = gr.Dropdown([], label="Constitution", scale=1)
        version = gr.Dropdown([], label="Version", scale=2)
        refresh = gr.Button("↻ Refresh", scale=0)
    info = gr.Markdown(elem_id="constitution-info")
    # The principles get the full width and a height that shows a whole constitution (the default's 17 rows)
    # without an inner scroll; short fixed columns keep their headers on one line.
    principles = gr.Dataframe(pd.DataFrame(columns=PRINCIPLE_COLUMNS), interactive=False, wrap=True,
                              elem_id="principles-table", max_height=2000,
                              label="Principles (click one to edit or preview it)",
                              column_widths=["10%", "17%", "5%", "68%"])
    with gr.Accordion("Versions", open=True):
        versions = gr.Dataframe(pd.DataFrame(columns=VERSION_COLUMNS), interactive=False, wrap=True,
                                elem_id="versions-table", max_height=300, column_widths=["6%", "74%", "20%"])
    with gr.Accordion("Edit principle (admin) — every save writes a new version", open=True):
        original = gr.State("")
        with gr.Row():
            kind = gr.Radio(["critique", "comparison"], value="critique", label="Kind", scale=1)
            pname = gr.Textbox(label="Name", scale=2, elem_id="principle-name")
            enabled = gr.Checkbox(value=True, label="Enabled", scale=0)
        with gr.Row():
            critique = gr.Textbox(label="Critique request", lines=3, elem_id="principle-critique")
            revision = gr.Textbox(label="Revision request", lines=3)
        text = gr.Textbox(label="Comparison instruction (kind = comparison)", lines=2)
        note = gr.Textbox(label="Version note", placeholder="why this change (optional)", elem_id="version-note")
        with gr.Row():
            save = gr.Button("Save as new version", variant="primary", elem_id="save-principle")
            new = gr.Button("New principle")
            disable = gr.Button("Disable")
            enable = gr.Button("Enable")
            delete = gr.Button("Delete", variant="stop")
        status = gr.Markdown(elem_id="constitution-status")
    with gr.Accordion("Compare two versions", open=False):
        with gr.Row():
            v1 = gr.Dropdown([], label="From")
            v2 = gr.Dropdown([], label="To")
            cmp_btn = gr.Button("Compare", scale=0)
        diff_view = gr.HTML()
    with gr.Accordion("Preview the exact prompt a principle produces", open=False):
        with gr.Row():
            pv_principle = gr.Dropdown([], label="Principle")
            pv_shots = gr.Slider(0, 4, value=0, step=1, label="Few-shot exemplars")
            pv_cot = gr.Checkbox(label="Chain of thought (comparison)")
        pv_transcript = gr.Textbox(SAMPLE_TRANSCRIPT, label="Sample transcript (ends with the response to critique)",
                                   lines=4)
        with gr.Row():
            pv_a = gr.Textbox(SAMPLE_A, label="Response A (comparison)")
            pv_b = gr.Textbox(SAMPLE_B, label="Response B (comparison)")
        pv_btn = gr.Button("Preview")
        pv_out = gr.Textbox(label="Sent to the model", lines=14, max_lines=40, buttons=["copy"],
                            elem_classes=["cai-mono"])
    with gr.Accordion("Import / export", open=False):
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Import JSON (ours or one of the paper's five files), max 5 MB",
                                 file_types=[".json"], type="filepath")
                into = gr.Textbox(label="Into constitution (empty: the file's own name)")
                imp_btn = gr.Button("Import")
                imp_status = gr.Markdown()
            with gr.Column():
                fmt = gr.Radio(["cai", "paper"], value="cai", label="Format")
                pkind = gr.Dropdown(list(C.PAPER_KINDS), value="critique", label="Paper file kind")
                exp_btn = gr.Button("Export shown version")
                exp_file = gr.File(label="Download", interactive=False)

    view_outputs = [name, version, versions, principles, pv_principle, v1, v2, info]
    do_load = bind(load, ctx)
    refresh.click(do_load, [name, version], view_outputs)
    name.input(lambda: None, None, version).then(do_load, [name, version], view_outputs)
    version.input(do_load, [name, version], view_outputs)
    on_page_load(do_load, [name, version], view_outputs)

    editor = [original, kind, pname, critique, revision, text, enabled]

    def select_row(df: pd.DataFrame, evt: gr.SelectData) -> str:
        return str(evt.row_value[1]) if evt.row_value else ""

    picked = gr.State("")
    principles.select(select_row, principles, picked).then(
        bind(pick_principle, ctx), [name, version, picked], editor
    ).then(lambda p: p, picked, pv_principle)
    new.click(lambda: ["", "critique", "", "", "", "", True], None, editor)

    saved = gr.State(None)  # the new version number; the dropdown only learns it in the reload below
    after_save = [status, saved]
    save.click(bind(save_principle, ctx), [name, *editor, note], after_save).then(
        do_load, [name, saved], view_outputs
    )
    for btn, action in ((disable, "disable"), (enable, "enable"), (delete, "delete")):
        btn.click(_action(ctx, action), [name, original, note], after_save).then(do_load, [name, saved], view_outputs)
    cmp_btn.click(bind(compare, ctx), [name, v1, v2], diff_view)
    pv_btn.click(bind(preview, ctx), [name, version, pv_principle, pv_transcript, pv_a, pv_b, pv_shots, pv_cot], pv_out)
    imported = gr.State("")  # the constitution imported into (maybe a new one the dropdown has not seen)
    imp_btn.click(bind(import_upload, ctx), [upload, into], [imp_status, imported]).then(
        lambda n, cur: n or cur, [imported, name], imported).then(do_load, [imported, saved], view_outputs)
    exp_btn.click(bind(export_file, ctx), [name, version, fmt, pkind], exp_file)
