"""Prompt sets and preference sets: import from HH/JSONL/CSV/text files, store, export in TRL's columns.

Every importer reads and checks the whole file first (UTF-8, valid records, a size limit per text) and
writes in one transaction, so bad input raises a `DataError` naming the file and line and stores nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai.files import IMPORT_HINT, DataError, Limits, iter_jsonl, parse_json, read_text
from cai.store import by_name, dumps, loads, now
from cai.transcript import as_prompt, split_pair

MAX_TEXT_BYTES = 100_000  # per prompt / response: a larger one is almost surely a broken file
PROMPT_KINDS = ("red-team", "helpful")
PREF_SOURCES = ("human", "ai", "arena")
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SAMPLE_PROMPTS = DATA_DIR / "sample_prompts.jsonl"
SAMPLE_SETS = {"red-team": "sample-red-team", "helpful": "sample-helpful"}
SAMPLE_PREFS = DATA_DIR / "sample_prefs.jsonl"
SAMPLE_PREF_SET = "sample-harmless-prefs"

PathLike = str | os.PathLike[str]
Progress = Callable[[int], None]  # called with the number of rows just read (a tqdm bar's update)


# ----------------------------------------------------------------------------- reading files


def check_text(where: str, field: str, value: Any) -> str:
    """A non-empty string within MAX_TEXT_BYTES, or a DataError saying which field of which line."""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    size = len(value.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise DataError(
            f"{where}: field {field!r} is {size:,} bytes, over the limit of {MAX_TEXT_BYTES:,} bytes per text"
        )
    return value


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".jsonl", ".ndjson"))


def _first_field(where: str, record: dict[str, Any], fields: tuple[str, ...]) -> tuple[str, Any]:
    for f in fields:
        if f in record:
            return f, record[f]
    names = ", ".join(repr(f) for f in fields)
    raise DataError(f"{where}: missing field: expected one of {names}")


# ----------------------------------------------------------------------------- prompts


def _canonical(where: str, field: str, value: Any) -> str:
    try:
        return as_prompt(check_text(where, field, value))
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None


def read_prompts(path: PathLike, limits: Limits | None = None, progress: Progress | None = None) -> list[str]:
    """Prompts of a file in canonical form (HH transcript ending "\\n\\nAssistant:").

    .jsonl (field prompt, text or hh-rlhf chosen), .json (a list of strings or such objects),
    .csv (column prompt or text), anything else: plain text, one prompt per non-blank line, or, when the
    file starts with "Human:", HH transcripts separated by lines holding only "---".
    Bounded by `limits` (rows and bytes; default `Limits.resolve()`); `progress(n)` is told of each row.
    """
    p = Path(path)
    lim = limits or Limits.resolve()
    text = read_text(p, lim.bytes, IMPORT_HINT)
    out: list[str] = []

    def add(where: str, field: str, value: Any) -> None:
        out.append(_canonical(where, field, value))
        lim.check_rows(p, len(out))
        if progress:
            progress(1)

    fields = ("prompt", "text", "chosen")
    name = p.name.lower().removesuffix(".gz")
    if _is_jsonl(p):
        for lineno, rec in iter_jsonl(p, text):
            add(f"{p}:{lineno}", *_first_field(f"{p}:{lineno}", rec, fields))
    elif name.endswith(".json"):
        items = parse_json(p, text)
        if not isinstance(items, list):
            raise DataError(f"{p}: expected a JSON list of prompts")
        lim.check_rows(p, len(items))
        for i, item in enumerate(items):
            where = f"{p}: item {i}"
            if isinstance(item, str):
                add(where, "prompt", item)
            elif isinstance(item, dict):
                add(where, *_first_field(where, item, fields))
            else:
                raise DataError(f"{where}: expected a string or an object with a prompt, got {type(item).__name__}")
    elif name.endswith(".csv"):
        _read_csv_prompts(p, text, add)
    elif text.lstrip().startswith("Human:"):
        _read_hh_text(p, text, add)
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                add(f"{p}:{n}", "line", line)
    return out


def _read_hh_text(p: Path, text: str, add: Callable[[str, str, Any], None]) -> None:
    """HH transcripts written out as text, conversations separated by "---" lines."""
    chunk: list[str] = []
    start = 1
    for n, line in enumerate([*text.splitlines(), "---"], 1):
        if line.strip() != "---":
            chunk.append(line)
            continue
        body = "\n".join(chunk).strip()
        if body:
            add(f"{p}:{start}", "transcript", "\n\n" + body)
        chunk, start = [], n + 1


def _read_csv_prompts(p: Path, text: str, add: Callable[[str, str, Any], None]) -> None:
    # The csv module's own cap (128 kB) would hide our size check behind a vaguer error.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = reader.fieldnames or []
    except csv.Error as exc:
        raise DataError(f"{p}:1: bad CSV header ({exc})") from None
    column = next((c for c in ("prompt", "text") if c in columns), None)
    if column is None:
        raise DataError(f"{p}:1: missing column: expected 'prompt' or 'text', found {', '.join(columns)}")
    while True:
        start = reader.line_num + 1  # the line this record starts on
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{p}:{start}: bad CSV ({exc})") from None
        where = f"{p}:{start}"
        if row.get(column) is None:
            raise DataError(f"{where}: missing field {column!r} (too few columns)")
        add(where, column, row[column])


def create_prompt_set(
    db: Database, name: str, kind: str, prompts: list[str], source: str = "", meta: list[dict] | None = None
) -> int:
    """Store a prompt set in one transaction; returns its id. Prompts must be canonical HH prompts."""
    if kind not in PROMPT_KINDS:
        raise DataError(f"prompt set kind must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    if not name.strip():
        raise DataError("a prompt set needs a name")
    if not prompts:
        raise DataError(f"prompt set {name!r}: no prompts")
    with db.atomic():
        if db.table("prompt_sets").count_where("name = ?", [name]):
            raise DataError(f"prompt set {name!r} already exists; choose another --name")
        set_id = (
            db.table("prompt_sets")
            .insert({"name": name, "kind": kind, "source": source, "created_at": now()})
            .last_pk
        )
        db.table("prompts").insert_all(
            {"set_id": set_id, "position": i, "text": t, "meta": dumps((meta or [{}] * len(prompts))[i])}
            for i, t in enumerate(prompts)
        )
    return int(set_id or 0)


def import_prompts(
    db: Database, path: PathLike, name: str, kind: str, limits: Limits | None = None, progress: Progress | None = None
) -> int:
    """Import a prompt file as a new set; returns the number of prompts."""
    prompts = read_prompts(path, limits, progress)
    create_prompt_set(db, name, kind, prompts, source=str(path))
    return len(prompts)


def get_prompt_set(db: Database, name: str) -> dict[str, Any]:
    row = by_name(db, "prompt_sets", name, "prompt set")
    row["count"] = db.table("prompts").count_where("set_id = ?", [row["id"]])
    return row


def list_prompt_sets(db: Database) -> list[dict[str, Any]]:
    sql = (
        "select s.id, s.name, s.kind, s.source, s.created_at, count(p.id) as count from prompt_sets s "
        "left join prompts p on p.set_id = s.id group by s.id order by s.id"
    )
    return [dict(r) for r in db.query(sql)]


def list_prompts(db: Database, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    set_id = get_prompt_set(db, name)["id"]
    rows = db.table("prompts").rows_where("set_id = ?", [set_id], order_by="position", limit=limit)
    return [{**r, "meta": loads(r["meta"], {})} for r in rows]


def seed_samples(db: Database) -> dict[str, int]:
    """Create the sample prompt sets from data/sample_prompts.jsonl if missing; returns {set: count}."""
    by_kind: dict[str, list[str]] = {k: [] for k in SAMPLE_SETS}
    for lineno, rec in iter_jsonl(SAMPLE_PROMPTS, read_text(SAMPLE_PROMPTS)):
        by_kind[rec["kind"]].append(_canonical(f"{SAMPLE_PROMPTS}:{lineno}", "prompt", rec["prompt"]))
    out = {}
    for kind, set_name in SAMPLE_SETS.items():
        if not db.table("prompt_sets").count_where("name = ?", [set_name]):
            create_prompt_set(db, set_name, kind, by_kind[kind], source="data/sample_prompts.jsonl")
        out[set_name] = get_prompt_set(db, set_name)["count"]
    return out


def seed_sample_prefs(db: Database) -> dict[str, int]:
    """Create the sample human preference set (hh-rlhf format, written for this project) if missing,
    so a fresh workbench can run an AI-vs-human agreement eval at once; returns {set: count}."""
    if not db.table("pref_sets").count_where("name = ?", [SAMPLE_PREF_SET]):
        create_pref_set(db, SAMPLE_PREF_SET, "human", "harmless", read_pairs(SAMPLE_PREFS),
                        provenance={"file": "data/sample_prefs.jsonl"})
    return {SAMPLE_PREF_SET: get_pref_set(db, SAMPLE_PREF_SET)["count"]}


# ----------------------------------------------------------------------------- preference pairs


def read_pairs(path: PathLike, limits: Limits | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Pairs of a JSONL(.gz) file: hh-rlhf chosen/rejected transcripts (split at the shared prompt),
    or explicit prompt/chosen/rejected[/p] rows as this module exports them. Human pairs get p=1.0.
    Bounded by `limits` (rows and bytes); `progress(n)` is told of each pair."""
    p = Path(path)
    if not _is_jsonl(p):
        raise DataError(f"{p}: preference pairs must be a .jsonl or .jsonl.gz file")
    lim = limits or Limits.resolve()
    text = read_text(p, lim.bytes, IMPORT_HINT)
    pairs = []
    for lineno, rec in iter_jsonl(p, text):
        where = f"{p}:{lineno}"
        for field in ("chosen", "rejected"):
            if field not in rec:
                raise DataError(f"{where}: missing field {field!r}")
            check_text(where, field, rec[field])
        if rec.get("prompt"):
            prompt = check_text(where, "prompt", rec["prompt"])
            chosen, rejected = rec["chosen"], rec["rejected"]
        else:
            try:
                prompt, chosen, rejected = split_pair(rec["chosen"], rec["rejected"])
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
        prob = rec.get("p", 1.0)
        if not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise DataError(f"{where}: field 'p' must be a number in [0, 1], got {prob!r}")
        pairs.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "p": float(prob),
                "meta": {"line": lineno},
            }
        )
        lim.check_rows(p, len(pairs))
        if progress:
            progress(1)
    return pairs


def create_pref_set(
    db: Database,
    name: str,
    source: str,
    kind: str,
    pairs: list[dict[str, Any]],
    provenance: dict[str, Any] | None = None,
    run_id: int | None = None,
) -> int:
    """Store a preference set in one transaction; returns its id. p = probability `chosen` is better."""
    if not name.strip():
        raise DataError("a preference set needs a name")
    if not pairs:
        raise DataError(f"preference set {name!r}: no pairs")
    for i, pair in enumerate(pairs):
        missing = [f for f in ("prompt", "chosen", "rejected", "p") if f not in pair]
        if missing:
            raise DataError(f"preference set {name!r}, pair {i}: missing {', '.join(missing)}")
        if not 0.0 <= float(pair["p"]) <= 1.0:
            raise DataError(f"preference set {name!r}, pair {i}: p must be in [0, 1], got {pair['p']}")
    with db.atomic():
        if db.table("pref_sets").count_where("name = ?", [name]):
            raise DataError(f"preference set {name!r} already exists; choose another --name")
        set_id = (
            db.table("pref_sets")
            .insert(
                {
                    "name": name,
                    "source": source,
                    "kind": kind,
                    "provenance": dumps(provenance or {}),
                    "run_id": run_id,
                    "created_at": now(),
                }
            )
            .last_pk
        )
        db.table("pairs").insert_all(
            {
                "set_id": set_id,
                "position": i,
                "prompt": pair["prompt"],
                "chosen": pair["chosen"],
                "rejected": pair["rejected"],
                "p": float(pair["p"]),
                "meta": dumps(pair.get("meta") or {}),
            }
            for i, pair in enumerate(pairs)
        )
    return int(set_id or 0)


def import_prefs(
    db: Database,
    path: PathLike,
    name: str,
    kind: str = "harmless",
    source: str = "human",
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> int:
    """Import a preference file as a new set; returns the number of pairs."""
    pairs = read_pairs(path, limits, progress)
    create_pref_set(db, name, source, kind, pairs, provenance={"file": str(path)})
    return len(pairs)


def get_pref_set(db: Database, name: str) -> dict[str, Any]:
    row = by_name(db, "pref_sets", name, "preference set")
    row["provenance"] = loads(row["provenance"], {})
    row["count"] = db.table("pairs").count_where("set_id = ?", [row["id"]])
    return row


def list_pref_sets(db: Database) -> list[dict[str, Any]]:
    sql = (
        "select s.id, s.name, s.source, s.kind, s.run_id, s.created_at, count(p.id) as count, "
        "avg(p.p) as mean_p from pref_sets s left join pairs p on p.set_id = s.id group by s.id order by s.id"
    )
    return [dict(r) for r in db.query(sql)]


def list_pairs(db: Database, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    set_id = get_pref_set(db, name)["id"]
    rows = db.table("pairs").rows_where("set_id = ?", [set_id], order_by="position", limit=limit)
    return [{**r, "meta": loads(r["meta"], {})} for r in rows]


# ----------------------------------------------------------------------------- export (TRL columns)


def prompt_records(db: Database, name: str) -> list[dict[str, Any]]:
    """A prompt set as TRL prompt-only rows."""
    return [{"prompt": r["text"]} for r in list_prompts(db, name)]


def pref_records(db: Database, name: str) -> list[dict[str, Any]]:
    """A preference set as TRL preference rows with an explicit prompt, plus our soft label `p`."""
    return [
        {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "p": r["p"]}
        for r in list_pairs(db, name)
    ]


def chain_records(db: Database, run_id: int, mode: str | None = None) -> list[dict[str, Any]]:
    """The SL chains of a run as TRL prompt/completion rows (completion = the final revision)."""
    where, params = "run_id = ?", list[Any]([run_id])
    if mode:
        where, params = where + " and mode = ?", [run_id, mode]
    rows = list(db.table("chains").rows_where(where, params, order_by="prompt_id, sample"))
    if not rows:
        raise LookupError(f"run {run_id} has no chains" + (f" with mode {mode!r}" if mode else ""))
    return [{"prompt": r["prompt"], "completion": " " + (r["final"] or "").strip()} for r in rows]


def write_records(records: list[dict[str, Any]], path: PathLike) -> Path:
    """Write rows as JSONL (.jsonl/.json) or Parquet (.parquet), loadable by datasets.load_dataset."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give the file to write")
    if not records:
        raise DataError(f"{p}: nothing to export")
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        pd.DataFrame.from_records(records).to_parquet(p, index=False)
    elif suffix in (".jsonl", ".json"):
        with p.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        raise DataError(f"{p}: export to .jsonl or .parquet")
    return p
