"""`cai init`, `cai constitution ...`, `cai prompts ...`, `cai prefs ...`: thin over cai.constitution/cai.data.

Each handler opens the database, calls one engine function and prints a table (or JSON with --json);
bad input raises DataError (a ValueError), which `cai.cli.main` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cai import constitution as C
from cai import data as D
from cai import files as F
from cai import store
from cai.cli import add_common, emit, table
from cai.prompts import plain

KIND_HELP = (
    "What to export in the paper format: critique (CritiqueRevisionInstructions.json), comparison "
    "(RLMadisonInstructions.json), critique-exemplars (CritiqueRevisionFewShotPrompts.json), "
    "comparison-exemplars (RLMadisonFewShotPrompts.json), comparison-cot-exemplars "
    "(RLMadisonPrecogFewShotPrompts.json). With --format cai: keep only principles of this kind."
)


def _db(args: argparse.Namespace) -> Any:
    return store.connect(args.db)


# ----------------------------------------------------------------------------- init


def cmd_init(args: argparse.Namespace) -> int:
    from cai import arena, models
    from cai.backends import builtin

    db = _db(args)
    v = C.seed_default(db)
    sets = D.seed_samples(db)
    result = {
        "db": str(store.db_path(args.db)),
        "constitution": {"name": v["name"], "version": v["version"], "version_id": v["id"]},
        "prompt_sets": sets,
        "pref_sets": D.seed_sample_prefs(db),
        "models": models.seed_embedded(db),
        "campaign": (arena.seed_sample_campaign(db) or {}).get("name"),
    }
    try:  # the first-use conversion happens here, with progress on stderr, not in the user's first run
        result["converted"] = builtin.prepare(_model_names(args.models))
    except builtin.ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit(
        args,
        result,
        lambda r: (
            f"workbench ready: {r['db']}\nconstitution {v['name']!r} v{v['version']}; "
            + ", ".join(f"{k} ({n} prompts)" for k, n in sets.items())
            + (f"\nmodels ready: {', '.join(r['converted'])}" if r["converted"] else "")
        ),
    )
    return 0


def _model_names(value: str | None) -> list[str]:
    """--models: a comma list of builtins, "none"; unset: the embedded models unless $CAI_PREPARE_MODELS=0."""
    from cai.backends.builtin import EMBEDDED

    if value is None:
        return [] if os.environ.get("CAI_PREPARE_MODELS", "1") in ("0", "false", "no") else list(EMBEDDED)
    return [] if value.strip() == "none" else [n.strip() for n in value.split(",") if n.strip()]


# ----------------------------------------------------------------------------- constitution


def _version_summary(v: dict[str, Any]) -> dict[str, Any]:
    return {"name": v["name"], "version": v["version"], "version_id": v["id"], "note": v["note"]}


def cmd_const_list(args: argparse.Namespace) -> None:
    rows = C.list_constitutions(_db(args))
    emit(args, rows, lambda r: table(r, ["name", "latest", "updated_at", "description"]))


def cmd_const_show(args: argparse.Namespace) -> None:
    v = C.resolve_version(_db(args), args.name, args.version)
    if args.kind:
        v = {**v, "principles": [p for p in v["principles"] if p["kind"] == args.kind]}

    def text(v: dict[str, Any]) -> str:
        head = f"{v['name']} v{v['version']} (id {v['id']}): {v['note']}"
        rows = [
            {
                "kind": p["kind"],
                "name": p["name"],
                "on": "yes" if p["enabled"] else "no",
                "text": plain(p["critique"] if p["kind"] == "critique" else p["text"])[:90],
            }
            for p in v["principles"]
        ]
        counts = {k: sum(e["kind"] == k for e in v["exemplars"]) for k in C.EXEMPLAR_KINDS}
        tail = "exemplars: " + ", ".join(f"{k} {n}" for k, n in counts.items())
        return "\n".join([head, table(rows, ["kind", "name", "on", "text"]), tail])

    emit(args, v, text)


def cmd_const_versions(args: argparse.Namespace) -> None:
    rows = C.list_versions(_db(args), args.name)
    cols = ["version", "id", "created_at", "critique", "comparison", "disabled", "exemplars", "note"]
    emit(args, rows, lambda r: table(r, cols))


def cmd_const_diff(args: argparse.Namespace) -> None:
    changes = C.diff_versions(_db(args), args.name, args.v1, args.v2)

    def text(changes: list[dict[str, Any]]) -> str:
        if not changes:
            return "no differences"
        lines = []
        for c in changes:
            lines.append(f"{c['change']} {c['target']} {c['kind']} {c['name']!r}")
            if c["change"] == "changed":
                for f, ba in c["fields"].items():
                    lines.append(f"  {f}: {ba['before']!r} -> {ba['after']!r}")
        return "\n".join(lines)

    emit(args, changes, text)


def cmd_const_import(args: argparse.Namespace) -> None:
    v = C.import_file(_db(args), args.file, into=args.into)
    result = {**_version_summary(v), **v["imported"]}
    emit(args, result, lambda r: f"imported {r['count']} ({r['format']}) into {r['name']!r} v{r['version']}")


def cmd_const_export(args: argparse.Namespace) -> None:
    db = _db(args)
    path = C.export(db, args.path, args.format, args.kind, args.name, args.version)
    v = C.resolve_version(db, args.name, args.version)
    result = {"path": str(path), **_version_summary(v), "format": args.format, "kind": args.kind}
    emit(args, result, lambda r: f"wrote {r['path']} ({r['name']} v{r['version']}, {r['format']})")


def cmd_const_restore(args: argparse.Namespace) -> None:
    db = _db(args)
    v = C.restore_version(db, args.name or C.resolve_version(db)["name"], args.version, args.note)
    emit(args, _version_summary(v), lambda r: f"{r['name']} v{r['version']}: {r['note']}")


def cmd_const_toggle(args: argparse.Namespace) -> None:
    db = _db(args)
    name = args.name or C.resolve_version(db)["name"]
    fn = {"enable": C.enable_principle, "disable": C.disable_principle, "delete": C.delete_principle}[
        args.action
    ]
    v = fn(db, name, args.principle, args.note)
    emit(args, _version_summary(v), lambda r: f"{r['name']} v{r['version']}: {r['note']}")


def cmd_const_add(args: argparse.Namespace) -> None:
    db = _db(args)
    name = args.name or C.resolve_version(db)["name"]
    p = {"kind": args.kind, "name": args.principle, "critique": args.critique, "revision": args.revision}
    p["text"] = args.text
    v = C.add_principle(db, name, p, args.note)
    emit(args, _version_summary(v), lambda r: f"{r['name']} v{r['version']}: {r['note']}")


def cmd_const_edit(args: argparse.Namespace) -> None:
    db = _db(args)
    name = args.name or C.resolve_version(db)["name"]
    changes = {k: getattr(args, k) for k in ("critique", "revision", "text") if getattr(args, k) is not None}
    if args.rename:
        changes["name"] = args.rename
    if not changes:
        raise ValueError("nothing to change: give --critique, --revision, --text or --rename")
    v = C.edit_principle(db, name, args.principle, args.note, **changes)
    emit(args, _version_summary(v), lambda r: f"{r['name']} v{r['version']}: {r['note']}")


# ----------------------------------------------------------------------------- prompts and prefs


def _limits(args: argparse.Namespace) -> F.Limits:
    return F.Limits.resolve(rows=args.max_rows, bytes=args.max_bytes)


def _progress(path: str, unit: str) -> Any:
    """A tqdm bar on stderr for a file of 1 MB or more (smaller imports finish before it would help)."""
    from tqdm import tqdm

    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return tqdm(desc=f"reading {os.path.basename(path)}", unit=f" {unit}", disable=size < PROGRESS_BYTES,
                file=sys.stderr)


PROGRESS_BYTES = 1_000_000


def cmd_prompts_import(args: argparse.Namespace) -> None:
    with _progress(args.file, "prompts") as bar:
        n = D.import_prompts(_db(args), args.file, args.name, args.kind, _limits(args), bar.update)
    emit(args, {"imported": n}, lambda r: f"imported {r['imported']} prompts into {args.name!r}")


def cmd_prompts_list(args: argparse.Namespace) -> None:
    db = _db(args)
    if not args.name:
        emit(
            args,
            D.list_prompt_sets(db),
            lambda r: table(r, ["name", "kind", "count", "source", "created_at"]),
        )
        return
    rows = D.list_prompts(db, args.name, args.limit)
    view = [{"position": r["position"], "text": r["text"].replace("\n", " ")[:100]} for r in rows]
    emit(args, rows, lambda _: table(view, ["position", "text"]))


def cmd_prompts_export(args: argparse.Namespace) -> None:
    db = _db(args)
    if (args.name is None) == (args.run is None):
        raise ValueError("give exactly one of --name (a prompt set) or --run (the SL chains of a run)")
    if args.run is not None:
        records = D.chain_records(db, args.run, args.mode)
    else:
        records = D.prompt_records(db, args.name)
    path = D.write_records(records, args.path)
    emit(args, {"path": str(path), "rows": len(records)}, lambda r: f"wrote {r['rows']} rows to {r['path']}")


def cmd_prefs_import(args: argparse.Namespace) -> None:
    with _progress(args.file, "pairs") as bar:
        n = D.import_prefs(_db(args), args.file, args.name, kind=args.kind, source=args.source,
                           limits=_limits(args), progress=bar.update)
    emit(args, {"imported": n}, lambda r: f"imported {r['imported']} pairs into {args.name!r}")


def cmd_prefs_list(args: argparse.Namespace) -> None:
    db = _db(args)
    if not args.name:
        cols = ["name", "source", "kind", "count", "mean_p", "run_id", "created_at"]
        emit(args, D.list_pref_sets(db), lambda r: table(r, cols))
        return
    rows = D.list_pairs(db, args.name, args.limit)
    view = [
        {"position": r["position"], "p": f"{r['p']:.3f}", "prompt": r["prompt"].replace("\n", " ")[-70:]}
        for r in rows
    ]
    emit(args, rows, lambda _: table(view, ["position", "p", "prompt"]))


def cmd_prefs_export(args: argparse.Namespace) -> None:
    records = D.pref_records(_db(args), args.name)
    path = D.write_records(records, args.path)
    emit(args, {"path": str(path), "rows": len(records)}, lambda r: f"wrote {r['rows']} rows to {r['path']}")


# ----------------------------------------------------------------------------- parser


def _cmd(sub: Any, name: str, help: str, func: Any, *, json_flag: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    add_common(p, json_flag=json_flag)
    p.set_defaults(func=func)
    return p


def _limit_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-rows", type=int, default=None,
                   help=f"Refuse a file of more rows than this (default: ${F.ROWS_ENV} or "
                   f"{F.DEFAULT_MAX_ROWS:,}).")
    p.add_argument("--max-bytes", type=int, default=None,
                   help=f"Refuse a file of more bytes than this, counted after decompression (default: "
                   f"${F.BYTES_ENV} or {F.DEFAULT_MAX_BYTES:,}).")


def _name_opts(p: argparse.ArgumentParser, *, version: bool = False) -> None:
    p.add_argument("--name", default="", help="Constitution name (default: the most recently changed one).")
    if version:
        p.add_argument("--version", type=int, default=None, help="Version number (default: the newest).")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    p = _cmd(
        sub,
        "init",
        "Create the workbench database and seed the default constitution and the sample prompt sets "
        "(sample-red-team, sample-helpful), and convert the embedded models into the cache once (progress on "
        "stderr). Safe to run again.",
        cmd_init,
    )
    p.add_argument("--models", default=None, metavar="NAMES",
                   help="Builtin models to convert now, comma-separated, or 'none' (default: the embedded "
                   "models smollm2,gemma3-270m; $CAI_PREPARE_MODELS=0 skips them).")

    const = sub.add_parser(
        "constitution",
        help="List, show, edit, diff, import and export constitutions (every edit is a new version).",
        description="Constitutions: principles and few-shot exemplars, immutably versioned.",
    )
    cs = const.add_subparsers(dest="constitution_command", metavar="COMMAND")
    cs.required = True
    _cmd(cs, "list", "List constitutions, most recently changed first.", cmd_const_list)
    p = _cmd(cs, "show", "Show the principles and exemplar counts of a version.", cmd_const_show)
    _name_opts(p, version=True)
    p.add_argument("--kind", choices=C.PRINCIPLE_KINDS, help="Show only principles of this kind.")
    p = _cmd(cs, "versions", "List the versions of a constitution with their notes.", cmd_const_versions)
    _name_opts(p)
    p = _cmd(cs, "diff", "Show what changed between two versions (field by field).", cmd_const_diff)
    p.add_argument("v1", type=int, help="The older version number.")
    p.add_argument("v2", type=int, help="The newer version number.")
    _name_opts(p)
    p = _cmd(
        cs,
        "import",
        "Import a constitution file; the format is detected from its content: our format, or one of the "
        "paper's five JSON files. A paper file replaces the principles (or exemplars) of its kind in a new "
        "version of --into (default: a constitution named after the file stem).",
        cmd_const_import,
    )
    p.add_argument("file", help="The JSON file to import.")
    p.add_argument(
        "--into", default=None, help="Constitution to add the new version to (created if missing)."
    )
    p = _cmd(
        cs,
        "export",
        "Write a version in the paper's JSON format (one kind per file, enabled principles only, byte-exact "
        "round trip) or in our own format (everything).",
        cmd_const_export,
    )
    p.add_argument("path", help="Output file.")
    p.add_argument("--format", choices=("paper", "cai"), default="paper", help="paper (default) or cai.")
    p.add_argument(
        "--kind",
        choices=[*C.PAPER_KINDS, *(k.replace("-", "_") for k in C.PAPER_KINDS if "-" in k)],
        help=KIND_HELP,
    )
    _name_opts(p, version=True)
    p = _cmd(cs, "restore", "Make a new version that copies an old one.", cmd_const_restore)
    p.add_argument("version", type=int, help="The version number to restore.")
    p.add_argument("--note", default="", help="Note for the new version (default: 'restore version N').")
    _name_opts(p)
    for action, what in (
        ("enable", "Enable a principle"),
        ("disable", "Disable a principle (kept, but not used)"),
        ("delete", "Delete a principle"),
    ):
        p = _cmd(cs, action, f"{what}, as a new version.", cmd_const_toggle)
        p.add_argument("principle", help="The principle's name.")
        p.add_argument("--note", default="", help="Note for the new version.")
        p.set_defaults(action=action)
        _name_opts(p)
    p = _cmd(cs, "add", "Add a principle, as a new version.", cmd_const_add)
    p.add_argument("principle", help="The new principle's name (unique in the version).")
    p.add_argument(
        "--kind", choices=C.PRINCIPLE_KINDS, required=True, help="critique (SL) or comparison (RL)."
    )
    p.add_argument("--critique", default=None, help="Critique request (kind critique).")
    p.add_argument("--revision", default=None, help="Revision request (kind critique).")
    p.add_argument("--text", default=None, help="Comparison instruction (kind comparison).")
    p.add_argument("--note", default="", help="Note for the new version.")
    _name_opts(p)
    p = _cmd(cs, "edit", "Change a principle's texts or name, as a new version.", cmd_const_edit)
    p.add_argument("principle", help="The principle's name.")
    p.add_argument("--critique", default=None, help="New critique request.")
    p.add_argument("--revision", default=None, help="New revision request.")
    p.add_argument("--text", default=None, help="New comparison instruction.")
    p.add_argument("--rename", default=None, help="New name.")
    p.add_argument("--note", default="", help="Note for the new version.")
    _name_opts(p)

    prompts = sub.add_parser(
        "prompts", help="Import, list and export prompt sets.", description="Prompt sets (HH transcripts)."
    )
    ps = prompts.add_subparsers(dest="prompts_command", metavar="COMMAND")
    ps.required = True
    p = _cmd(
        ps,
        "import",
        "Import prompts from .jsonl (field prompt, text or hh-rlhf chosen), .json, .csv (column prompt or "
        "text) or plain text (one per line) as a new set; stored as HH transcripts ending in 'Assistant:'.",
        cmd_prompts_import,
    )
    p.add_argument("file", help="The prompt file.")
    p.add_argument("--name", required=True, help="Name of the new prompt set (must be unused).")
    p.add_argument("--kind", required=True, choices=D.PROMPT_KINDS, help="red-team or helpful.")
    _limit_opts(p)
    p = _cmd(ps, "list", "List prompt sets, or the prompts of one set with --name.", cmd_prompts_list)
    p.add_argument("--name", default=None, help="Show this set's prompts.")
    p.add_argument("--limit", type=int, default=None, help="Show at most this many prompts.")
    p = _cmd(
        ps,
        "export",
        "Export a prompt set (column prompt) or the SL chains of a run (columns prompt, completion) as "
        ".jsonl or .parquet, ready for datasets.load_dataset and TRL.",
        cmd_prompts_export,
    )
    p.add_argument("path", help="Output file (.jsonl or .parquet).")
    p.add_argument("--name", default=None, help="The prompt set to export.")
    p.add_argument("--run", type=int, default=None, help="Export the SL chains of this run instead.")
    p.add_argument(
        "--mode", default=None, help="With --run: only chains of this mode (critique|direct|helpful)."
    )

    prefs = sub.add_parser(
        "prefs",
        help="Import, list and export preference pairs.",
        description="Preference sets (prompt, chosen, rejected, p).",
    )
    fs = prefs.add_subparsers(dest="prefs_command", metavar="COMMAND")
    fs.required = True
    p = _cmd(
        fs,
        "import",
        "Import preference pairs from .jsonl or .jsonl.gz: hh-rlhf chosen/rejected transcripts (split at the "
        "shared conversation) or prompt/chosen/rejected[/p] rows. Human pairs get p=1.0.",
        cmd_prefs_import,
    )
    p.add_argument("file", help="The preference file.")
    p.add_argument("--name", required=True, help="Name of the new preference set (must be unused).")
    p.add_argument(
        "--kind", default="harmless", help="What the pairs compare: harmless (default), helpful, ..."
    )
    p.add_argument(
        "--source", default="human", choices=D.PREF_SOURCES, help="Who labelled them (default human)."
    )
    _limit_opts(p)
    p = _cmd(fs, "list", "List preference sets, or the pairs of one set with --name.", cmd_prefs_list)
    p.add_argument("--name", default=None, help="Show this set's pairs.")
    p.add_argument("--limit", type=int, default=None, help="Show at most this many pairs.")
    p = _cmd(
        fs,
        "export",
        "Export a preference set with TRL's columns (prompt, chosen, rejected) plus p, as .jsonl or .parquet.",
        cmd_prefs_export,
    )
    p.add_argument("path", help="Output file (.jsonl or .parquet).")
    p.add_argument("--name", required=True, help="The preference set to export.")
