"""Constitutions in the database: named, immutably versioned sets of principles and few-shot exemplars.

Every edit writes a new version (nothing is overwritten) and runs cite the version's row id; texts are
validated and kept in the paper's wire form (see cai/prompts.py), exemplars exactly as their source gave them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlite_utils import Database

from cai.data import DataError, check_text
from cai.files import safe_name
from cai.prompts import wrap_comparison, wrap_critique, wrap_revision
from cai.store import by_name, now

PRINCIPLE_KINDS = ("critique", "comparison")
EXEMPLAR_KINDS = ("critique", "comparison", "comparison_cot")
# A constitution is read on every tab load and sent with every run: bound it (the paper's has 16 + 16).
MAX_PRINCIPLES = 1_000
MAX_EXEMPLARS = 200


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
    return by_name(db, "constitutions", name, "constitution")


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
