"""What a run resolves when it is created, pinned in its stored config so a resume reads the same things.

`pin` fixes every reference that could move under a run (the "newest" constitution version, the path a
model name points at, the torch thread count picked from the machine's load) and fingerprints every input
it reads: each file a config field names (sha256 of its bytes) and each stored prompt or preference set
(sha256 of its rows). The pins live in the config JSON under PINS; `check` compares them with the store
and the files as they are now and says, in one line per input, what changed, so resume can refuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

from sqlite_utils import Database

from cai.config import MODELS, PREFS, PROMPT_SETS, StageConfig

PINS = "_pinned"  # the key of the pins in a run's stored config JSON (not a config field)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def set_sha256(db: Database, ref: str, name: str) -> str | None:
    """sha256 over a stored prompt set's (position, text) or preference set's (position, prompt, chosen,
    rejected, p) rows in order; None when no set has that name."""
    if ref == PROMPT_SETS:
        sets, sql = "prompt_sets", "select position, text from prompts where set_id = ? order by position"
    else:
        sets, sql = "pref_sets", ("select position, prompt, chosen, rejected, p from pairs where set_id = ? "
                                  "order by position")
    row = db.execute(f"select id from {sets} where name = ?", [name]).fetchone()
    if row is None:
        return None
    h = hashlib.sha256()
    for r in db.execute(sql, [row[0]]):
        h.update(repr(tuple(r)).encode())
    return h.hexdigest()


def resolve(db: Database, config: StageConfig) -> StageConfig:
    """The config with "newest"/"most recent" constitution references replaced by the version they mean now
    (unchanged where nothing resolves: the worker then fails with the lookup's own message)."""
    names = {f.name for f in dataclasses.fields(config)}
    if "constitution" in names and "constitution_version" in names:
        from cai.constitution import resolve_version

        try:
            cv = resolve_version(db, config.constitution, config.constitution_version)  # type: ignore[attr-defined]
        except LookupError:
            return config
        return dataclasses.replace(config, constitution=cv["name"], constitution_version=cv["version"])  # type: ignore[call-arg]
    return config


def inputs(db: Database, config: StageConfig) -> dict[str, dict[str, Any]]:
    """Fingerprints of what the run reads, by config field: files ({"file", "sha256"}) and stored sets
    ({"set", "sha256"})."""
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(config):
        value, ref = getattr(config, f.name), f.metadata.get("ref")
        if not isinstance(value, str) or not value:
            continue
        if ref in (PROMPT_SETS, PREFS):
            digest = set_sha256(db, ref, value)
            if digest:
                out[f.name] = {"set": value, "sha256": digest}
        elif ref is None and os.path.isfile(value):
            out[f.name] = {"file": os.path.abspath(value), "sha256": file_sha256(value)}
    return out


def model_paths(db: Database, config: StageConfig) -> dict[str, dict[str, Any]]:
    """Where each model field's name points in the registry now ({"name", "path"}), for registered names."""
    from cai import models

    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("ref") == MODELS and isinstance(value, str) and value:
            row = models.get_model(db, value)
            if row:
                out[f.name] = {"name": value, "path": row["path"]}
    return out


def pin(db: Database, config: StageConfig, live_running: int,
        inherited: tuple[int, str] | None = None) -> tuple[StageConfig, dict[str, Any]]:
    """(config with its references resolved, the pins to store beside it). The torch thread count is picked
    here, once, from the machine as it is now (CPUs, load average, `live_running` runs; $CAI_THREADS wins),
    or `inherited` from the pipeline or experiment the run is a stage of (whose own load, seconds ago, would
    otherwise count as the machine's): thread count changes a trained model's weights, so every execution of
    the run uses this one."""
    from cai.backends.precision import choose_threads

    config = resolve(db, config)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if inherited and not os.environ.get("CAI_THREADS"):
        n, why = inherited
    else:
        n, why = choose_threads(cpus, os.getloadavg()[0], live_running, os.environ.get("CAI_THREADS"))
    return config, {"threads": n, "threads_why": why, "inputs": inputs(db, config),
                    "models": model_paths(db, config)}


def check(db: Database, config: StageConfig, pins: dict[str, Any]) -> list[str]:
    """What changed since the pins were taken, one line per input (empty: nothing)."""
    problems = []
    for name, was in (pins.get("inputs") or {}).items():
        if "file" in was:
            path = was["file"]
            if not os.path.isfile(path):
                problems.append(f"{name}: the file {path} is gone")
            elif file_sha256(path) != was["sha256"]:
                problems.append(f"{name}: the file {path} changed since the run was created "
                                f"(sha256 {was['sha256'][:12]}… then, {file_sha256(path)[:12]}… now)")
        else:
            ref = PROMPT_SETS if name in _refs(config, PROMPT_SETS) else PREFS
            now = set_sha256(db, ref, was["set"])
            if now != was["sha256"]:
                what = "is gone" if now is None else "changed since the run was created"
                problems.append(f"{name}: the stored set {was['set']!r} {what}")
    for name, was in (pins.get("models") or {}).items():
        from cai import models

        row = models.get_model(db, was["name"])
        if row is None or row["path"] != was["path"]:
            problems.append(f"{name}: the model {was['name']!r} pointed at {was['path']} when the run was created, "
                            f"now at {row['path'] if row else 'nothing'}")
    return problems


def _refs(config: StageConfig, ref: str) -> set[str]:
    return {f.name for f in dataclasses.fields(config) if f.metadata.get("ref") == ref}
