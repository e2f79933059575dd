"""What changed between two versions of a constitution: principles by name, exemplars by position, field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from cai.constitution.storage import EXEMPLAR_KINDS, resolve_version

FIELDS = ("kind", "critique", "revision", "text", "alternatives", "enabled", "position")


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
