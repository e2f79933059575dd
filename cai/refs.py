"""Whether what a stage config names in the store (prompt sets, preference sets, runs; its fields' `ref` and
`required` metadata) is there.

A form or command checks these before it creates a run, so a missing preference set is refused with one
line ("prefs: choose a human preference set ...") instead of a worker traceback a minute later.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai.config import refs, required

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
    needed, named = required(config), refs(config)
    for name in config.to_dict():
        value = getattr(config, name)
        if value in (None, "", 0):
            if name in needed:
                problems.append(f"{name}: {needed[name]}")
            continue
        ref = named.get(name)
        if ref in _TABLE_SQL and not db.execute(_TABLE_SQL[ref], [value]).fetchone():
            problems.append(f"{name}: no {_NOUN[ref]} named {value!r}")
        elif ref and ref.startswith("runs:"):
            kind = ref.split(":", 1)[1]
            row = db.execute("select kind from runs where id = ?", [int(value)]).fetchone()
            if row is None or row[0] != kind:
                problems.append(f"{name}: no {kind} run #{value}")
    return problems
