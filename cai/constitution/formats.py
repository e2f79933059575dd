"""Constitution files: the paper's five JSON files (one kind each) and our own format, imported as new
versions and exported again.

Paper files are written with plain json.dumps, as the paper's own are, so importing one and exporting it gives
the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai.constitution.storage import (
    PRINCIPLE_KINDS,
    check_size,
    content,
    create_constitution,
    new_version,
    normalize_exemplar,
    normalize_principle,
    resolve_version,
)
from cai.data import DATA_DIR, DataError
from cai.files import parse_json, read_text, safe_name, slugify

# What one paper file holds, and so what `export(format="paper", kind=...)` writes.
PAPER_KINDS = (
    "critique",
    "comparison",
    "critique-exemplars",
    "comparison-exemplars",
    "comparison-cot-exemplars",
)
FORMAT = "cai-constitution"
DEFAULT_NAME = "default"
DEFAULT_FILE = DATA_DIR / "constitution.json"
MAX_FILE_BYTES = 16 * 1024 * 1024

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------- paper formats (pure)


def detect_format(obj: Any) -> str:
    """Which file this is, by content: "cai" or one of PAPER_KINDS."""
    if isinstance(obj, dict):
        return "cai" if obj.get("format") == FORMAT else "critique"
    if isinstance(obj, list) and obj:
        if all(isinstance(x, str) for x in obj):
            return "critique-exemplars" if any("CritiqueRequest:" in x for x in obj) else "comparison"
        if all(isinstance(x, dict) for x in obj):
            if any("corrects" in x or "incorrects" in x for x in obj):
                return "comparison-exemplars"
            return "comparison-cot-exemplars"
    raise DataError(
        "unrecognised constitution file: expected our format or one of the paper's five JSON files "
        "(CritiqueRevisionInstructions, RLMadisonInstructions, or a few-shot prompt file)"
    )


def from_paper(obj: Any, kind: str, where: str = "file") -> list[dict[str, Any]]:
    """Principles (kinds critique/comparison) or exemplars (the *-exemplars kinds) of a paper object."""
    if kind == "critique":
        out = []
        for key, entry in obj.items():
            if not isinstance(entry, dict) or "prompt" not in entry or "edit_request" not in entry:
                raise DataError(f"{where}: entry {key!r} needs 'prompt' (a list) and 'edit_request'")
            crit = entry["prompt"]
            if not isinstance(crit, list) or not crit:
                raise DataError(
                    f"{where}: entry {key!r}: 'prompt' must be a non-empty list of critique requests"
                )
            out.append(
                {
                    "kind": "critique",
                    "name": key,
                    "critique": crit[0],
                    "alternatives": crit[1:],
                    "revision": entry["edit_request"],
                }
            )
        return out
    if kind == "comparison":
        return [{"kind": "comparison", "name": f"comparison{i}", "text": t} for i, t in enumerate(obj)]
    ex_kind = kind.removesuffix("-exemplars").replace("-", "_")
    return [{"kind": ex_kind, "data": d} for d in obj]


def to_paper(version: Mapping[str, Any], kind: str) -> Any:
    """The paper's JSON object for one kind of a version (enabled principles only)."""
    kind = kind.replace("_", "-")
    if kind not in PAPER_KINDS:
        raise DataError(f"--kind must be one of {', '.join(PAPER_KINDS)} for the paper format, got {kind!r}")
    ps = [p for p in version["principles"] if p["enabled"]]
    if kind == "critique":
        return {
            p["name"]: {"prompt": [p["critique"], *p["alternatives"]], "edit_request": p["revision"]}
            for p in ps
            if p["kind"] == "critique"
        }
    if kind == "comparison":
        return [p["text"] for p in ps if p["kind"] == "comparison"]
    ex_kind = kind.removesuffix("-exemplars").replace("-", "_")
    return [e["data"] for e in version["exemplars"] if e["kind"] == ex_kind]


def to_cai(version: Mapping[str, Any]) -> dict[str, Any]:
    """Our own format: everything in a version, disabled principles included."""
    ps, es = content(version)
    for p in ps:
        if p["kind"] == "comparison":
            del p["critique"], p["revision"], p["alternatives"]
        else:
            del p["text"]
            if not p["alternatives"]:
                del p["alternatives"]
    return {
        "format": FORMAT,
        "name": version["name"],
        "description": version.get("description", ""),
        "version": version["version"],
        "note": version["note"],
        "principles": ps,
        "exemplars": es,
    }


# ----------------------------------------------------------------------------- files


def load_json(path: PathLike) -> Any:
    p = Path(path)
    return parse_json(p, read_text(p, MAX_FILE_BYTES))


def import_file(db: Database, path: PathLike, into: str | None = None) -> dict[str, Any]:
    """Import our format or a paper file (detected by content) as a new version.

    A paper file replaces the principles (or exemplars) of its kind in a new version of `into`
    (default: a constitution named after the file stem, created if missing). Returns the new version
    with `imported` = {"format", "count"}.
    """
    p = Path(path)
    obj = load_json(p)
    fmt = detect_format(obj)
    if fmt == "cai":
        name = into or obj.get("name") or slugify(p.stem)
        ps = obj.get("principles", [])
        es = obj.get("exemplars", [])
        if not isinstance(ps, list) or not isinstance(es, list):
            raise DataError(f"{p}: 'principles' and 'exemplars' must be lists")
        check_size(ps, es, str(p))
        count = len(ps) + len(es)
        ps = [normalize_principle(x, f"{p}: principle {i}") for i, x in enumerate(ps)]
        es = [normalize_exemplar(x, f"{p}: exemplar {i}") for i, x in enumerate(es)]
    else:
        name = into or slugify(p.stem)
        items = from_paper(obj, fmt, str(p))
        check_size(items if fmt in PRINCIPLE_KINDS else [], items if fmt not in PRINCIPLE_KINDS else [], str(p))
        count = len(items)
        ps, es = [], []
        if db.table("constitutions").count_where("name = ?", [name]):
            ps, es = content(resolve_version(db, name))
        if fmt in PRINCIPLE_KINDS:
            ps = [x for x in ps if x["kind"] != fmt] + items
            ps = [normalize_principle(x, f"{p}: principle {i}") for i, x in enumerate(ps)]
        else:
            es = [x for x in es if x["kind"] != items[0]["kind"]] + items
            es = [normalize_exemplar(x, f"{p}: exemplar {i}") for i, x in enumerate(es)]
    safe_name("constitution name", name)
    note = f"import {p.name} ({fmt})"
    if db.table("constitutions").count_where("name = ?", [name]):
        v = new_version(db, name, ps, es, note)
    else:
        v = create_constitution(db, name, obj.get("description", "") if fmt == "cai" else "", ps, es, note)
    return {**v, "imported": {"format": fmt, "count": count}}


def export(
    db: Database,
    path: PathLike,
    format: str = "paper",
    kind: str | None = None,
    name: str = "",
    version: int | None = None,
) -> Path:
    """Write a version as one paper file (`kind` required) or in our format; returns the path.

    Paper files are written with plain json.dumps, as the paper's own files are, so round trips are exact.
    """
    v = resolve_version(db, name, version)
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give the file to write")
    if format == "paper":
        if not kind:
            raise DataError(
                f"the paper format holds one kind per file: give --kind ({', '.join(PAPER_KINDS)})"
            )
        text = json.dumps(to_paper(v, kind))
    elif format == "cai":
        obj = to_cai(v)
        if kind:
            if kind not in PRINCIPLE_KINDS:
                raise DataError(
                    f"with the cai format --kind filters principles: {', '.join(PRINCIPLE_KINDS)}"
                )
            obj["principles"] = [x for x in obj["principles"] if x["kind"] == kind]
        text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    else:
        raise DataError(f"format must be 'paper' or 'cai', got {format!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def seed_default(db: Database) -> dict[str, Any]:
    """Install the default constitution from data/constitution.json unless it exists; return its newest version."""
    if not db.table("constitutions").count_where("name = ?", [DEFAULT_NAME]):
        import_file(db, DEFAULT_FILE, into=DEFAULT_NAME)
    return resolve_version(db, DEFAULT_NAME)
