"""What a stage config names in the store (prompt sets, preference sets, runs, models) and whether it is there.

A form or command checks these before it creates a run, so a missing preference set is refused with one
line ("prefs: choose a human preference set ...") instead of a worker traceback a minute later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlite_utils import Database

# Config field -> what its value names: a table of named things, or "runs:<kind>" for a run id of that kind.
REFS: dict[str, str] = {
    "prompts": "prompt_sets", "helpful_prompts": "prompt_sets",
    "model": "models", "policy": "models", "feedback_model": "models", "reward_model": "models", "pm": "models",
    "constitution": "constitutions",
    "chains": "runs:sl", "run": "runs:sl", "pairs": "runs:pairs",
    "ai_prefs": "prefs", "human_prefs": "prefs", "heldout_prefs": "prefs", "prefs": "prefs",
}
# Fields a stage cannot start without, and the one line that says how to get one.
REQUIRED: dict[str, dict[str, str]] = {
    "sl": {"prompts": "name a red-team prompt set (import one with `cai prompts import`)"},
    "sft": {"chains": "choose the SL run to train on (launch an SL chains run first)"},
    "pairs": {"prompts": "name a red-team prompt set (import one with `cai prompts import`)"},
    "label": {"pairs": "choose a response pairs run (launch a “Response pairs” run first)"},
    "rl": {"policy": "name the policy to tune", "reward_model": "name a preference model (train one first)",
           "prompts": "choose a prompt set"},
    "dpo": {"policy": "name the policy to tune", "prefs": "choose an AI preference set (run AI labels first)"},
    "hhh": {"data": "give the HHH eval file (JSONL with prompt, corrects, incorrects)"},
    "agreement": {"prefs": "choose a human preference set (import one on the Labels tab or with `cai prefs import`)"},
    "revision-scores": {"run": "choose the SL run whose steps to score", "pm": "name a preference model"},
}
_NOUN = {"prompt_sets": "prompt set", "prefs": "preference set", "constitutions": "constitution"}
_TABLE_SQL = {
    "prompt_sets": "select 1 from prompt_sets where name = ?",
    "prefs": "select 1 from pref_sets where name = ?",
    "constitutions": "select 1 from constitutions where name = ?",
}


def missing_references(db: Database, config: Any) -> list[str]:
    """One line per required reference that is empty and per named set or run that does not exist.

    Models are not checked here: a model may be a local path or a hub id that only its loader can judge.
    """
    problems = []
    required = REQUIRED.get(config.kind, {})
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value in (None, "", 0):
            if f.name in required:
                problems.append(f"{f.name}: {required[f.name]}")
            continue
        ref = REFS.get(f.name)
        if ref in _TABLE_SQL and not db.execute(_TABLE_SQL[ref], [value]).fetchone():
            problems.append(f"{f.name}: no {_NOUN[ref]} named {value!r}")
        elif ref and ref.startswith("runs:"):
            kind = ref.split(":", 1)[1]
            row = db.execute("select kind from runs where id = ?", [int(value)]).fetchone()
            if row is None or row[0] != kind:
                problems.append(f"{f.name}: no {kind} run #{value}")
    return problems
