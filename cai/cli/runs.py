"""`cai run KIND`, `cai runs ...` and `cai chains ...`: thin over cai.runs and cai.sl.

`cai run` builds one subcommand per stage in cai.stages.REGISTRY with flags made from the config
dataclass fields (help from their metadata; `add_stage_parser`, which `cai eval` uses too), creates the
run, launches its worker and follows it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cai import runs, sl, store
from cai.cli import add_common, emit, table
from cai.config import ConfigError, StageConfig, fields_help, required
from cai.data import write_records
from cai.stages import REGISTRY, Stage


def row_id(text: str) -> int:
    """An id flag or argument: a whole number SQLite can hold (1 .. 2**63-1), else a clear argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is not a valid id (1 .. 2**63-1)")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's commands to the `cai` parser."""
    run = sub.add_parser("run", help="Start a pipeline run (sl, sft, pairs, label, pm, rl, dpo, evals).")
    kinds = run.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for stage in REGISTRY.values():
        p = add_stage_parser(kinds, stage.kind, stage)
        p.set_defaults(func=cmd_run)

    rs = sub.add_parser("runs", help="List, show, cancel and resume runs.")
    rsub = rs.add_subparsers(dest="action", metavar="ACTION")
    rsub.required = True
    p = rsub.add_parser("list", help="Runs, newest first.")
    p.add_argument("--kind", default=None, help="Only runs of this kind.")
    p.add_argument("--limit", type=int, default=50, help="At most this many runs.")
    add_common(p)
    p.set_defaults(func=cmd_runs_list)
    p = rsub.add_parser("show", help="A run's row and its latest log lines.")
    p.add_argument("run_id", type=row_id, help="Run id.")
    p.add_argument("--logs", type=int, default=20, help="Log lines to show.")
    add_common(p)
    p.set_defaults(func=cmd_runs_show)
    p = rsub.add_parser("cancel", help="Ask a run to stop; it stops between batches.")
    p.add_argument("run_id", type=row_id, help="Run id.")
    add_common(p)
    p.set_defaults(func=cmd_runs_cancel)
    p = rsub.add_parser("resume", help="Relaunch a failed, cancelled or interrupted run; finished work is kept.")
    p.add_argument("run_id", type=row_id, help="Run id.")
    p.add_argument("--detach", action="store_true", help="Return at once; the worker keeps going.")
    add_common(p)
    p.set_defaults(func=cmd_runs_resume)

    ch = sub.add_parser("chains", help="SL critique/revision chains: list, show, export.")
    csub = ch.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True
    p = csub.add_parser("list", help="Chains, oldest first.")
    p.add_argument("--run", type=row_id, default=None, help="Only chains of this SL run.")
    p.add_argument("--limit", type=int, default=100, help="At most this many chains.")
    add_common(p)
    p.set_defaults(func=cmd_chains_list)
    p = csub.add_parser("show", help="A chain: initial -> critique -> revision, with each step's principle.")
    p.add_argument("chain_id", type=row_id, help="Chain id.")
    p.add_argument("--sent", action="store_true", help="Also print the exact text sent for each step.")
    add_common(p)
    p.set_defaults(func=cmd_chains_show)
    p = csub.add_parser(
        "export", help="Write TRL prompt/completion rows (final revisions): JSONL, or Parquet for a .parquet path."
    )
    p.add_argument("path", help="Output file (.jsonl or .parquet).")
    p.add_argument("--run", type=row_id, default=None, help="The SL run to export (default: the newest SL run).")
    add_common(p)
    p.set_defaults(func=cmd_chains_export)


# ----------------------------------------------------------------------------- config flags

def add_stage_parser(sub: argparse._SubParsersAction, name: str, stage: Stage,  # type: ignore[type-arg]
                     help: str | None = None) -> argparse.ArgumentParser:
    """The one parser of a stage, for every door (`cai run KIND`, `cai eval NAME`): a flag per config field,
    the stage's aliases, the common flags and --detach. Its defaults carry `config_cls`."""
    what = stage.help
    p = sub.add_parser(name, help=help or what[0].upper() + what[1:] + ".",
                       description=f"Start a run of {what}; by default wait for it, printing progress.")
    add_config_flags(p, stage.config, stage.aliases)
    add_common(p)
    p.add_argument("--detach", action="store_true", help="Return the run id at once; the worker keeps going.")
    p.set_defaults(config_cls=stage.config)
    return p


def add_config_flags(parser: argparse.ArgumentParser, cls: type[StageConfig],
                     aliases: Mapping[str, str | tuple[str, Any]] | None = None) -> None:
    """One flag per config field: --field-name, typed, help from the field's metadata; a `several` field takes
    several words (or one comma-separated word). `aliases`:
    friendly extra flags, flag -> field (takes a value) or (field, value) (sets it), e.g. --one-order."""
    aliases = aliases or {}
    for f in fields_help(cls):
        flag = "--" + f["name"].replace("_", "-")
        names = [flag] + [a for a, t in aliases.items() if t == f["name"]]
        base = _base_type(f["type"])
        extra = []
        if f.get("choices"):
            extra.append("one of " + ", ".join(map(str, f["choices"])))
        if f["default"] not in (None, ""):
            extra.append(f"default: {f['default']}")
        help_text = f["help"] + (f" ({'; '.join(extra)})" if extra else "")
        if f["name"] == "constitution":
            help_text += " Accepts NAME, NAME@VERSION or a version number."
        kw: dict[str, Any] = {"dest": f"cfg_{f['name']}", "default": None, "help": help_text}
        if base is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
        elif f.get("several"):
            parser.add_argument(*names, nargs="*", metavar=f["name"].upper(), action=_Joined, **kw)
        else:
            parser.add_argument(*names, type=base, metavar=f["name"].upper(), choices=f.get("choices"), **kw)
        for alias, target in aliases.items():
            if isinstance(target, tuple) and target[0] == f["name"]:
                parser.add_argument(alias, dest=kw["dest"], action="store_const", const=target[1],
                                    help=f"The same as --{'' if target[1] else 'no-'}{flag[2:]}.")


class _Joined(argparse.Action):
    """Several words (or one with commas) as the one comma-separated string the config field holds."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, ",".join(v.strip() for v in values if v.strip()))


def _base_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[no-any-return]


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (the rest keep the dataclass defaults)."""
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if "constitution" in values:
        name, version = parse_constitution(values["constitution"])
        values["constitution"] = name
        if version is not None:
            values["constitution_version"] = version
    return values


def parse_constitution(text: str) -> tuple[str, int | None]:
    """NAME -> (NAME, None); NAME@3 -> (NAME, 3); 3 -> ("", 3) (version 3 of the current constitution)."""
    text = text.strip()
    if text.isdigit():
        return "", int(text)
    name, at, version = text.rpartition("@")
    if at:
        if not version.isdigit():
            raise ValueError(f"--constitution: {text!r}: the part after '@' must be a version number")
        return name, int(version)
    return text, None


# ----------------------------------------------------------------------------- run / runs


def stage_config(args: argparse.Namespace) -> StageConfig:
    """The config from the flags; a required field left empty is refused with its one line (no run is made)."""
    config: StageConfig = args.config_cls.from_dict(config_values(args))
    for name, how in required(config).items():
        if getattr(config, name) in (None, "", 0):
            raise ConfigError(f"--{name.replace('_', '-')}: {how}")
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = stage_config(args)
    db = store.connect(args.db)
    run_id, _proc = runs.start(db, store.db_path(args.db), config)
    if args.detach:
        emit(args, {"id": run_id, "kind": config.kind, "status": "queued"}, lambda d: str(d["id"]))
        return 0
    return show_end(args, follow(args, db, run_id))


def show_end(args: argparse.Namespace, run: dict[str, Any] | None) -> int:
    """The final row (--json) or a one-line summary; 130 when the user stopped following (Ctrl-C)."""
    if run is None:
        return 130
    emit(args, run, lambda r: f"run {r['id']} {r['kind']} {r['status']}"
         + (f": {json.dumps(r['result'])}" if r["result"] is not None else "")
         + (f"\nerror: {r['error']}" if r["error"] else ""))
    return 0 if run["status"] == "done" else 1


def follow(args: argparse.Namespace, db: Any, run_id: int, poll: float = 0.5) -> dict[str, Any] | None:
    """Print progress and log lines (to stderr) until the run ends, and the worker's last output if it died;
    returns the final row, or None after Ctrl-C (the run goes on)."""
    last_log, last_line = 0, ""
    try:
        while True:
            run = runs.get_run(db, run_id)
            for row in db.table("run_logs").rows_where("run_id = ? and id > ?", [run_id, last_log], order_by="id"):
                print(f"[{row['level']}] {row['line']}", file=sys.stderr)
                last_log = row["id"]
            line = progress_line(run)
            if line != last_line:
                print(line, file=sys.stderr)
                last_line = line
            if run["status"] not in runs.ACTIVE:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"run {run_id} goes on in the background: cai runs show {run_id}", file=sys.stderr)
        return None
    if run["status"] == "interrupted":
        tail = _tail(runs.worker_log(store.db_path(args.db), run_id))
        print(f"run {run_id}: the worker died" + (f"; its output ends:\n{tail}" if tail else ""), file=sys.stderr)
    return run


def progress_line(run: dict[str, Any]) -> str:
    """One line: status, items done / total, the step running now (stages with step progress), tokens/s, ETA."""
    s = runs.shown(run)  # the one status source, as the runs list and the run page show it
    parts = [f"run {run['id']} {run['kind']} {s['status']}: {s['done']}/{s['total']}"]
    if s["steps_total"]:
        parts.append(f"step {s['steps_done']}/{s['steps_total']}" + (f" ({s['phase']})" if s["phase"] else ""))
    if run.get("tokens_per_s"):
        parts.append(f"{run['tokens_per_s']:.1f} tok/s")
    if s["eta_s"] is not None:
        parts.append(f"ETA {s['eta_s']:.0f} s")
    return "  ".join(parts)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_runs_list(args: argparse.Namespace) -> int:
    rows = runs.list_runs(store.connect(args.db), kind=args.kind, limit=args.limit)
    for r in rows:
        r["progress"] = r["shown"]["text"]
    emit(args, rows, lambda rs: table([{**r, "status": r["shown"]["status"]} for r in rs],
                                      ["id", "kind", "status", "progress", "model_id", "created_at", "error"]))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    run = runs.get_run(db, args.run_id)
    run["logs"] = runs.logs(db, args.run_id, tail=args.logs)

    def text(r: dict[str, Any]) -> str:
        head = [progress_line(r)]
        for key in ("model_id", "constitution_version_id", "seed", "created_at", "started_at", "finished_at", "host",
                    "last_seen", "error"):
            if r.get(key) is not None:
                head.append(f"{key}: {r[key]}")
        head.append("config: " + json.dumps(r["config"], sort_keys=True))
        if r.get("pinned"):
            head.append("pinned at creation: " + json.dumps(r["pinned"], sort_keys=True))
        if r["result"] is not None:
            head.append("result: " + json.dumps(r["result"], sort_keys=True))
        if r["kind"] == "compare" and r["result"]:
            from cai.stages.compare import rating_lines

            head += ["ratings:", *rating_lines(r["result"])]
        head += [f"  {g['ts']} [{g['level']}] {g['line']}" for g in r["logs"]]
        return "\n".join(head)

    emit(args, run, text)
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    runs.request_cancel(db, args.run_id)
    emit(args, runs.get_run(db, args.run_id), lambda r: f"run {r['id']}: cancel requested ({r['status']})")
    return 0


def cmd_runs_resume(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    runs.resume(db, store.db_path(args.db), args.run_id)
    if args.detach:
        emit(args, {"id": args.run_id, "status": "queued"}, lambda d: f"run {d['id']} resumed")
        return 0
    return show_end(args, follow(args, db, args.run_id))


# ----------------------------------------------------------------------------- chains


def cmd_chains_list(args: argparse.Namespace) -> int:
    rows = sl.list_chains(store.connect(args.db), run_id=args.run, limit=args.limit)
    for r in rows:
        r["final_text"] = _short(r["final"])
        r["flag_list"] = ",".join(r["flags"])
    emit(args, rows, lambda rs: table(
        rs, ["id", "run_id", "prompt_id", "sample", "mode", "n_revisions", "flag_list", "final_text"]))
    return 0


def cmd_chains_show(args: argparse.Namespace) -> int:
    chain = sl.get_chain(store.connect(args.db), args.chain_id)
    emit(args, chain, lambda c: format_chain(c, sent=args.sent))
    return 0


def format_chain(chain: dict[str, Any], sent: bool = False) -> str:
    """A chain as text: the prompt, then each step headed by its kind, round and principle."""
    lines = [
        f"chain {chain['id']}  run {chain['run_id']}  prompt {chain['prompt_id']}  sample {chain['sample']}  "
        f"mode {chain['mode']}  model {chain.get('model')}  constitution {chain.get('constitution')}",
        "prompt:" + chain["prompt"].rstrip(),
    ]
    for s in chain["steps"]:
        head = s["kind"] if s["kind"] == "initial" else f"{s['kind']} {s['round']}"
        if s["principle"]:
            head += f" [{s['principle']}]"
        if s["flags"]:
            head += "  flags: " + ",".join(s["flags"])
        lines.append(f"--- {head} ---")
        if sent:
            lines += ["sent:", s["sent"], "output:"]
        lines.append(s["output"].strip() or "(empty)")
    return "\n".join(lines)


def _short(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def cmd_chains_export(args: argparse.Namespace) -> int:
    db = store.connect(args.db)
    if args.run is None:
        newest = runs.list_runs(db, kind="sl", limit=1)
        if not newest:
            raise LookupError("there is no SL run to export yet")
        args.run = newest[0]["id"]
    runs.get_run(db, args.run)  # a clear error for an unknown run
    rows, skipped = sl.sft_records(db, args.run)
    path = write_records(rows, args.path)
    emit(args, {"path": str(path), "run": args.run, "rows": len(rows), "skipped_empty": skipped},
         lambda d: f"wrote {d['rows']} rows of run {d['run']} to {d['path']}"
         + (f" ({skipped} empty finals left out)" if skipped else ""))
    return 0
