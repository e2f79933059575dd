"""Constitutions: named, immutably versioned sets of principles (critique/revision pairs and comparison
instructions) and few-shot exemplars; every edit writes a new version and runs cite the version row id.

Texts are kept in the paper's wire form (see cai/prompts.py) and exemplars as their source gave them, so
importing one of the paper's five JSON files and exporting it again gives the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai.data import DATA_DIR, DataError, check_text
from cai.files import parse_json, read_text, safe_name, slugify
from cai.prompts import wrap_comparison, wrap_critique, wrap_revision
from cai.store import now

PRINCIPLE_KINDS = ("critique", "comparison")
EXEMPLAR_KINDS = ("critique", "comparison", "comparison_cot")
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
# A constitution is read on every tab load and sent with every run: bound it (the paper's has 16 + 16).
MAX_PRINCIPLES = 1_000
MAX_EXEMPLARS = 200
MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_FILE = DATA_DIR / "constitution.json"
FIELDS = ("kind", "critique", "revision", "text", "alternatives", "enabled", "position")

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------- validation (pure)


def normalize_principle(p: Mapping[str, Any], where: str = "principle") -> dict[str, Any]:
    """A principle as stored: kind, name, wire-form texts, alternatives, enabled. Raises DataError."""
    kind = p.get("kind")
    if kind not in PRINCIPLE_KINDS:
        raise DataError(f"{where}: kind must be one of {', '.join(PRINCIPLE_KINDS)}, got {kind!r}")
    name = p.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: a principle needs a name")
    where = f"{where} {name!r}"
    out: dict[str, Any] = {"kind": kind, "name": name, "critique": "", "revision": "", "text": ""}
    if kind == "critique":
        out["critique"] = wrap_critique(check_text(where, "critique", p.get("critique")))
        out["revision"] = wrap_revision(check_text(where, "revision", p.get("revision")))
        alts = p.get("alternatives") or []
        if not isinstance(alts, list):
            raise DataError(f"{where}: alternatives must be a list of critique requests")
        out["alternatives"] = [wrap_critique(check_text(where, "alternatives", a)) for a in alts]
    else:
        out["text"] = wrap_comparison(check_text(where, "text", p.get("text")))
        out["alternatives"] = []
    out["enabled"] = bool(p.get("enabled", True))
    return out


def normalize_exemplar(e: Mapping[str, Any], where: str = "exemplar") -> dict[str, Any]:
    """An exemplar as stored: kind and data exactly as given (checked for the kind's shape)."""
    kind, data = e.get("kind"), e.get("data")
    if kind not in EXEMPLAR_KINDS:
        raise DataError(f"{where}: kind must be one of {', '.join(EXEMPLAR_KINDS)}, got {kind!r}")
    if kind == "critique":
        data = check_text(where, "data", data)
        if "CritiqueRequest:" not in data or "RevisionRequest:" not in data:
            raise DataError(f"{where}: a critique exemplar needs CritiqueRequest: and RevisionRequest: turns")
    else:
        if not isinstance(data, dict):
            raise DataError(f"{where}: a {kind} exemplar is an object with a 'prompt'")
        check_text(where, "prompt", data.get("prompt"))
        if kind == "comparison":
            for f in ("corrects", "incorrects"):
                v = data.get(f)
                if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                    raise DataError(f"{where}: field {f!r} must be a non-empty list of strings")
        elif "{}" not in data["prompt"]:
            raise DataError(f"{where}: a comparison_cot exemplar needs a '{{}}' where the principle goes")
    return {"kind": kind, "data": data}


def _check_names(principles: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for p in principles:
        if p["name"] in seen:
            raise DataError(f"two principles are named {p['name']!r}; names must be unique in a version")
        seen.add(p["name"])


# ----------------------------------------------------------------------------- reading


def _constitution(db: Database, name: str = "") -> dict[str, Any]:
    if not name:
        sql = (
            "select c.* from constitutions c join constitution_versions v on v.constitution_id = c.id "
            "order by v.id desc limit 1"
        )
        rows = list(db.query(sql))
        if not rows:
            raise LookupError("there is no constitution yet: run `cai init`")
        return rows[0]
    rows = list(db.table("constitutions").rows_where("name = ?", [name]))
    if not rows:
        known = ", ".join(r["name"] for r in db.table("constitutions").rows) or "none"
        raise LookupError(f"no constitution named {name!r} (known: {known})")
    return rows[0]


def resolve_version(db: Database, name: str = "", version: int | None = None) -> dict[str, Any]:
    """One version with its principles and exemplars; empty name = the most recently changed constitution."""
    c = _constitution(db, name)
    where, params = "constitution_id = ?", [c["id"]]
    if version is not None:
        where, params = where + " and version = ?", [c["id"], int(version)]
    rows = list(db.table("constitution_versions").rows_where(where, params, order_by="version desc", limit=1))
    if not rows:
        raise LookupError(f"constitution {c['name']!r} has no version {version}")
    v = rows[0]
    order = "case kind when 'critique' then 0 else 1 end, position"
    principles = [
        {
            "id": r["id"],
            "position": r["position"],
            "kind": r["kind"],
            "name": r["name"],
            "critique": r["critique"] or "",
            "revision": r["revision"] or "",
            "text": r["text"] or "",
            "enabled": bool(r["enabled"]),
            "alternatives": json.loads(r["alternatives"]) if r["alternatives"] else [],
        }
        for r in db.table("principles").rows_where("version_id = ?", [v["id"]], order_by=order)
    ]
    exemplars = [
        {"kind": r["kind"], "position": r["position"], "data": json.loads(r["data"])}
        for r in db.table("exemplars").rows_where("version_id = ?", [v["id"]], order_by="kind, position")
    ]
    return {
        "id": v["id"],
        "constitution_id": c["id"],
        "name": c["name"],
        "description": c["description"] or "",
        "version": v["version"],
        "note": v["note"] or "",
        "parent_id": v["parent_id"],
        "created_at": v["created_at"],
        "principles": principles,
        "exemplars": exemplars,
    }


def version_by_id(db: Database, version_id: int) -> dict[str, Any]:
    """The version a run recorded (by its row id)."""
    row = db.table("constitution_versions").get(version_id)
    c = db.table("constitutions").get(row["constitution_id"])
    return resolve_version(db, c["name"], row["version"])


def list_constitutions(db: Database) -> list[dict[str, Any]]:
    """Every constitution with its newest version number, most recently changed first."""
    sql = (
        "select c.id, c.name, c.description, c.created_at, c.updated_at, max(v.version) as latest, "
        "max(v.id) as last_version_id from constitutions c join constitution_versions v "
        "on v.constitution_id = c.id group by c.id order by last_version_id desc"
    )
    return [dict(r) for r in db.query(sql)]


def list_versions(db: Database, name: str = "") -> list[dict[str, Any]]:
    """The versions of a constitution, oldest first, with principle counts."""
    c = _constitution(db, name)
    sql = (
        "select v.id, v.version, v.note, v.parent_id, v.created_at, "
        "(select count(*) from principles p where p.version_id = v.id and p.kind = 'critique') as critique, "
        "(select count(*) from principles p where p.version_id = v.id and p.kind = 'comparison') as comparison, "
        "(select count(*) from principles p where p.version_id = v.id and not p.enabled) as disabled, "
        "(select count(*) from exemplars e where e.version_id = v.id) as exemplars "
        "from constitution_versions v where v.constitution_id = ? order by v.version"
    )
    return [dict(r) for r in db.query(sql, [c["id"]])]


# ----------------------------------------------------------------------------- writing versions


def _insert_version(
    db: Database,
    constitution_id: int,
    principles: Iterable[Mapping[str, Any]],
    exemplars: Iterable[Mapping[str, Any]],
    note: str,
    parent_id: int | None,
) -> int:
    ps = [normalize_principle(p, f"principle {i}") for i, p in enumerate(principles)]
    es = [normalize_exemplar(e, f"exemplar {i}") for i, e in enumerate(exemplars)]
    check_size(ps, es)
    _check_names(ps)
    latest = db.execute(
        "select max(version) from constitution_versions where constitution_id = ?", [constitution_id]
    ).fetchone()[0]
    stamp = now()
    version_id = (
        db.table("constitution_versions")
        .insert(
            {
                "constitution_id": constitution_id,
                "version": (latest or 0) + 1,
                "note": note,
                "parent_id": parent_id,
                "created_at": stamp,
            }
        )
        .last_pk
    )
    positions = dict.fromkeys(PRINCIPLE_KINDS + EXEMPLAR_KINDS, 0)
    rows = []
    for p in ps:
        rows.append(
            {
                **{k: p[k] for k in ("kind", "name", "critique", "revision", "text")},
                "version_id": version_id,
                "position": positions[p["kind"]],
                "enabled": int(p["enabled"]),
                "alternatives": json.dumps(p["alternatives"], ensure_ascii=False)
                if p["alternatives"]
                else None,
            }
        )
        positions[p["kind"]] += 1
    if rows:
        db.table("principles").insert_all(rows)
    ex_pos = dict.fromkeys(EXEMPLAR_KINDS, 0)
    ex_rows = []
    for e in es:
        # Plain json.dumps (no key sorting): the exemplar keeps its source's key order for exact export.
        ex_rows.append(
            {
                "version_id": version_id,
                "kind": e["kind"],
                "position": ex_pos[e["kind"]],
                "data": json.dumps(e["data"]),
            }
        )
        ex_pos[e["kind"]] += 1
    if ex_rows:
        db.table("exemplars").insert_all(ex_rows)
    db.table("constitutions").update(constitution_id, {"updated_at": stamp})
    return int(version_id or 0)


def check_size(principles: list[Any], exemplars: list[Any], where: str = "a constitution") -> None:
    """At most MAX_PRINCIPLES principles and MAX_EXEMPLARS exemplars per version."""
    if len(principles) > MAX_PRINCIPLES:
        raise DataError(f"{where}: {len(principles):,} principles, over the limit of {MAX_PRINCIPLES:,}")
    if len(exemplars) > MAX_EXEMPLARS:
        raise DataError(f"{where}: {len(exemplars):,} exemplars, over the limit of {MAX_EXEMPLARS:,}")


def create_constitution(
    db: Database,
    name: str,
    description: str = "",
    principles: Iterable[Mapping[str, Any]] = (),
    exemplars: Iterable[Mapping[str, Any]] = (),
    note: str = "created",
) -> dict[str, Any]:
    """A new constitution with its version 1; its name must be safe as a file name (exports use it)."""
    if isinstance(name, str) and not name.strip():
        raise DataError("a constitution needs a name")
    safe_name("constitution name", name)
    with db.atomic():
        if db.table("constitutions").count_where("name = ?", [name]):
            raise DataError(f"a constitution named {name!r} already exists")
        stamp = now()
        cid = (
            db.table("constitutions")
            .insert({"name": name, "description": description, "created_at": stamp, "updated_at": stamp})
            .last_pk
        )
        _insert_version(db, int(cid or 0), principles, exemplars, note, None)
    return resolve_version(db, name)


def new_version(
    db: Database,
    name: str,
    principles: Iterable[Mapping[str, Any]],
    exemplars: Iterable[Mapping[str, Any]],
    note: str = "",
    parent_id: int | None = None,
) -> dict[str, Any]:
    """Write the next version of `name` with these principles and exemplars (in order)."""
    c = _constitution(db, name)
    if parent_id is None:
        parent_id = resolve_version(db, c["name"])["id"]
    with db.atomic():
        _insert_version(db, c["id"], principles, exemplars, note, parent_id)
    return resolve_version(db, c["name"])


def content(version: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A version's principles and exemplars in the shape new_version takes (no ids, no positions)."""
    ps = [
        {k: p[k] for k in ("kind", "name", "critique", "revision", "text", "enabled", "alternatives")}
        for p in version["principles"]
    ]
    es = [{"kind": e["kind"], "data": e["data"]} for e in version["exemplars"]]
    return ps, es


def _find(principles: list[dict[str, Any]], principle_name: str) -> int:
    for i, p in enumerate(principles):
        if p["name"] == principle_name:
            return i
    raise LookupError(f"no principle named {principle_name!r}")


def add_principle(db: Database, name: str, principle: Mapping[str, Any], note: str = "") -> dict[str, Any]:
    """A new version with `principle` appended to its kind."""
    v = resolve_version(db, name)
    ps, es = content(v)
    ps.append(dict(principle))
    return new_version(
        db, v["name"], ps, es, note or f"add {principle.get('kind')} principle {principle.get('name')!r}"
    )


def edit_principle(
    db: Database, name: str, principle_name: str, note: str = "", **changes: Any
) -> dict[str, Any]:
    """A new version with one principle's fields changed (critique, revision, text, name, enabled, alternatives)."""
    allowed = {"critique", "revision", "text", "name", "enabled", "alternatives"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise DataError(f"cannot edit {', '.join(unknown)}; editable: {', '.join(sorted(allowed))}")
    v = resolve_version(db, name)
    ps, es = content(v)
    i = _find(ps, principle_name)
    ps[i] = {**ps[i], **changes}
    fields = ", ".join(sorted(changes))
    return new_version(db, v["name"], ps, es, note or f"edit principle {principle_name!r}: {fields}")


def disable_principle(db: Database, name: str, principle_name: str, note: str = "") -> dict[str, Any]:
    return edit_principle(
        db, name, principle_name, note or f"disable principle {principle_name!r}", enabled=False
    )


def enable_principle(db: Database, name: str, principle_name: str, note: str = "") -> dict[str, Any]:
    return edit_principle(
        db, name, principle_name, note or f"enable principle {principle_name!r}", enabled=True
    )


def delete_principle(db: Database, name: str, principle_name: str, note: str = "") -> dict[str, Any]:
    v = resolve_version(db, name)
    ps, es = content(v)
    del ps[_find(ps, principle_name)]
    return new_version(db, v["name"], ps, es, note or f"delete principle {principle_name!r}")


def restore_version(db: Database, name: str, version: int, note: str = "") -> dict[str, Any]:
    """A new version that copies an old one (nothing is overwritten)."""
    old = resolve_version(db, name, version)
    ps, es = content(old)
    return new_version(db, old["name"], ps, es, note or f"restore version {version}", parent_id=old["id"])


# ----------------------------------------------------------------------------- diff (pure over versions)


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Principle and exemplar changes between two resolved versions, with field-level before/after."""
    out: list[dict[str, Any]] = []
    old = {p["name"]: p for p in before["principles"]}
    new = {p["name"]: p for p in after["principles"]}
    for n, p in old.items():
        if n not in new:
            out.append(_entry("removed", "principle", p["kind"], n, {f: (p[f], None) for f in FIELDS}))
            continue
        q = new[n]
        changed = {f: (p[f], q[f]) for f in FIELDS if p[f] != q[f]}
        if changed:
            out.append(_entry("changed", "principle", q["kind"], n, changed))
    for n, q in new.items():
        if n not in old:
            out.append(_entry("added", "principle", q["kind"], n, {f: (None, q[f]) for f in FIELDS}))
    for kind in EXEMPLAR_KINDS:
        a = [e["data"] for e in before["exemplars"] if e["kind"] == kind]
        b = [e["data"] for e in after["exemplars"] if e["kind"] == kind]
        for i in range(max(len(a), len(b))):
            x, y = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            if x != y:
                change = "added" if x is None else "removed" if y is None else "changed"
                out.append(_entry(change, "exemplar", kind, f"{kind}[{i}]", {"data": (x, y)}))
    return out


def _entry(
    change: str, target: str, kind: str, name: str, fields: dict[str, tuple[Any, Any]]
) -> dict[str, Any]:
    return {
        "change": change,
        "target": target,
        "kind": kind,
        "name": name,
        "fields": {f: {"before": b, "after": a} for f, (b, a) in fields.items()},
    }


def diff_versions(db: Database, name: str, v1: int, v2: int) -> list[dict[str, Any]]:
    """What changed from version v1 to version v2 of a constitution."""
    return diff(resolve_version(db, name, v1), resolve_version(db, name, v2))


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
