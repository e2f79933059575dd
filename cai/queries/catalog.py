"""What the store holds to choose from: prompt sets, models, constitutions and preference sets.

These feed every picker in the app (stage forms, filters, the model registry and lineage), so each is one
small query over a small table, in a stable order, returning dicts.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database


def prompt_sets(db: Database) -> list[dict[str, Any]]:
    """Every prompt set, oldest first: name, kind and how many prompts it holds."""
    return list(db.query("select s.name, s.kind, count(p.id) as prompts from prompt_sets s "
                         "left join prompts p on p.set_id = s.id group by s.id order by s.id"))


def first_red_team_set(db: Database) -> str | None:
    """The oldest red-team prompt set's name (what a new SL run starts from), or None."""
    row = db.execute("select name from prompt_sets where kind = 'red-team' order by id limit 1").fetchone()
    return row[0] if row else None


def model_names(db: Database) -> list[str]:
    """Registered model names, oldest first."""
    return [r[0] for r in db.execute("select name from models order by id").fetchall()]


def models_newest_first(db: Database) -> list[dict[str, Any]]:
    """Registered models (id, name), newest first."""
    return list(db.query("select id, name from models order by id desc"))


def model_registry(db: Database) -> list[dict[str, Any]]:
    """The model registry with where each model came from, oldest first.

    Each row: id, name, path, backend, chat, parent (name), run ("kind #id"), constitution ("name vN"),
    created_at.
    """
    return list(db.query(
        "select m.id, m.name, m.path, m.backend, m.chat, p.name as parent, r.kind || ' #' || r.id as run, "
        "k.name || ' v' || v.version as constitution, m.created_at from models m "
        "left join models p on p.id = m.parent_id left join runs r on r.id = m.run_id "
        "left join constitution_versions v on v.id = m.constitution_version_id "
        "left join constitutions k on k.id = v.constitution_id order by m.id"))


def constitutions_latest(db: Database) -> list[dict[str, Any]]:
    """Every constitution with a version (name, latest version number), oldest first."""
    return list(db.query("select c.name, max(v.version) as latest from constitutions c "
                         "join constitution_versions v on v.constitution_id = c.id group by c.id order by c.id"))


def constitution_version(db: Database, version_id: int) -> dict[str, Any] | None:
    """A constitution version by id (name, version, note), or None."""
    rows = list(db.query("select k.name, v.version, v.note from constitution_versions v "
                         "join constitutions k on k.id = v.constitution_id where v.id = ?", [version_id]))
    return rows[0] if rows else None


def pref_sets(db: Database, source: str | None = None) -> list[dict[str, Any]]:
    """Preference sets, newest first (name, source, kind, run_id, pairs), of one source ("human", "ai") or all."""
    where, args = ("where s.source = ? ", [source]) if source else ("", [])
    return list(db.query("select s.name, s.source, s.kind, s.run_id, count(p.id) as pairs from pref_sets s "
                         f"left join pairs p on p.set_id = s.id {where}group by s.id order by s.id desc", args))


def find_pref_set(db: Database, name: str) -> dict[str, Any] | None:
    """The preference set row named `name`, or None (`cai.data.get_pref_set` raises instead)."""
    rows = list(db["pref_sets"].rows_where("name = ?", [name], limit=1))
    return rows[0] if rows else None
