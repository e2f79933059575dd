"""Where a model came from: its registry ancestors and the runs (and their inputs) that produced each.

`lineage_tree` follows `cai.models.lineage` and each producing run's config (the SL run an SFT run read,
the preference set a PM run trained on and the label run that wrote it, ...) down to constitution versions,
so "constitution v3 -> chains -> SFT model -> labels -> PM -> RL model" is read off the store, not kept twice.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import models, runs
from cai.config import MODELS, PREFS, refs
from cai.queries import catalog
from cai.stages import REGISTRY
from ui.common import esc


def input_fields(kind: str) -> tuple[list[str], list[str], list[str]]:
    """A stage's config fields holding a run id, naming a preference set, naming a model (its fields' `ref`)."""
    named = refs(REGISTRY[kind].config) if kind in REGISTRY else {}
    return ([f for f, r in named.items() if r.startswith("runs:")], [f for f, r in named.items() if r == PREFS],
            [f for f, r in named.items() if r == MODELS])


def _version_node(db: Database, version_id: int | None) -> dict[str, Any] | None:
    if not version_id:
        return None
    v = catalog.constitution_version(db, version_id)
    if not v:
        return None
    return {"type": "constitution", "label": f"constitution {v['name']} v{v['version']}", "detail": v["note"] or "",
            "children": []}


def run_node(db: Database, run_id: int, seen: set[str]) -> dict[str, Any]:
    key = f"run:{run_id}"
    try:
        run = runs.get_run(db, run_id)
    except runs.RunError:
        return {"type": "run", "label": f"run #{run_id} (missing)", "detail": "", "children": []}
    node = {"type": "run", "label": f"{run['kind']} run #{run_id}", "detail": run["status"], "children": []}
    if key in seen:
        return node
    seen.add(key)
    cfg = run["config"] or {}
    cv = _version_node(db, run.get("constitution_version_id"))
    if cv:
        node["children"].append(cv)
    run_fields, pref_fields, model_fields = input_fields(run["kind"])
    for f in run_fields:
        if isinstance(cfg.get(f), int) and cfg[f]:
            node["children"].append({**run_node(db, cfg[f], seen), "via": f})
    for f in pref_fields:
        if cfg.get(f):
            node["children"].append({**pref_node(db, cfg[f], seen), "via": f})
    for f in model_fields:
        if cfg.get(f):
            node["children"].append({**model_node_by_name(db, cfg[f], seen), "via": f})
    return node


def pref_node(db: Database, name: str, seen: set[str]) -> dict[str, Any]:
    s = catalog.find_pref_set(db, name)
    if not s:
        return {"type": "prefs", "label": f"preferences {name} (missing)", "detail": "", "children": []}
    node = {"type": "prefs", "label": f"preferences {name}", "detail": f"{s['source']} · {s['kind']}", "children": []}
    if s["run_id"]:
        node["children"].append(run_node(db, s["run_id"], seen))
    return node


def model_node_by_name(db: Database, name: str, seen: set[str]) -> dict[str, Any]:
    row = models.get_model(db, name)
    if row is None:
        return {"type": "model", "label": f"model {name}", "detail": "not registered", "children": []}
    return model_node(db, row["id"], seen)


def model_node(db: Database, model_id: int, seen: set[str] | None = None) -> dict[str, Any]:
    """The model, the run that produced it (with that run's inputs), and its parent model."""
    seen = set() if seen is None else seen
    m = models.get_model_by_id(db, model_id)
    node = {"type": "model", "label": f"model {m['name']}", "detail": m["path"], "children": []}
    key = f"model:{model_id}"
    if key in seen:
        return node
    seen.add(key)
    if m["run_id"]:
        node["children"].append({**run_node(db, m["run_id"], seen), "via": "made by"})
    if m["parent_id"]:  # an ancestor already shown elsewhere in the tree appears again as a leaf
        node["children"].append({**model_node(db, m["parent_id"], seen), "via": "parent"})
    cv = _version_node(db, m["constitution_version_id"])
    if cv and not m["run_id"]:
        node["children"].append(cv)
    return node


def lineage_tree(db: Database, model_id: int) -> dict[str, Any]:
    return model_node(db, model_id)


def ancestry(db: Database, model_id: int) -> list[str]:
    """The registry ancestors, oldest first, as one line of names (cai.models.lineage)."""
    return [m["name"] for m in reversed(models.lineage(db, model_id))]


def tree_html(node: dict[str, Any]) -> str:
    """A nested list; every label comes from the store and is escaped."""
    via = f'<span class="cai-meta">{esc(node["via"])}: </span>' if node.get("via") else ""
    detail = f' <span class="cai-meta">({esc(node["detail"])})</span>' if node.get("detail") else ""
    kids = "".join(tree_html(c) for c in node["children"])
    inner = f"<ul>{kids}</ul>" if kids else ""
    return f"<li>{via}<b>{esc(node['label'])}</b>{detail}{inner}</li>"


def lineage_html(db: Database, model_id: int) -> str:
    line = " → ".join(esc(n) for n in ancestry(db, model_id))
    return f"<p><b>Ancestry:</b> {line}</p><ul class='cai-tree'>{tree_html(lineage_tree(db, model_id))}</ul>"
