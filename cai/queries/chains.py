"""SL chains as pages: filter by run, model, constitution version, principle or text, newest first.

Paging is SQL LIMIT/OFFSET over indexed columns (principle through `chain_steps`, text through the
`chains_fts` index), so 100,000 chains cost a reader one page; one chain in full is `cai.sl.get_chain`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

PAGE_SIZE = 25


@dataclass(frozen=True)
class ChainFilter:
    """What to show; an empty field does not filter."""

    run_id: int | None = None
    model_id: int | None = None
    version_id: int | None = None
    principle: str = ""
    text: str = ""


@dataclass
class ChainPage:
    rows: list[dict[str, Any]]
    total: int
    page: int  # 1-based, clamped to the pages that exist
    pages: int


def where_clause(db: Database, f: ChainFilter) -> tuple[str, list[Any]]:
    """The filter as a WHERE clause over `chains c` and its arguments (text is quoted for FTS)."""
    clauses: list[str] = []
    args: list[Any] = []
    if f.run_id:
        clauses.append("c.run_id = ?")
        args.append(f.run_id)
    if f.model_id:
        clauses.append("c.model_id = ?")
        args.append(f.model_id)
    if f.version_id:
        clauses.append("c.constitution_version_id = ?")
        args.append(f.version_id)
    if f.principle:
        clauses.append("c.id in (select chain_id from chain_steps where principle = ?)")
        args.append(f.principle)
    query = fts_query(f.text)
    if query:
        clauses.append("c.id in (select rowid from chains_fts where chains_fts match ?)")
        args.append(query)
    return (" where " + " and ".join(clauses)) if clauses else "", args


def fts_query(text: str) -> str:
    """The words of `text` as an FTS5 query that matches chains holding all of them: each word a quoted
    string (its own quotes doubled), so no input is FTS5 syntax (a lone `"` was an fts5 syntax error)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in (text or "").split() if word.strip('"'))


def chain_page(db: Database, f: ChainFilter, page: int = 1, size: int = PAGE_SIZE) -> ChainPage:
    """One page of chains, newest first; never reads more than `size` rows of text.

    Each row: id, run_id, model (name), constitution ("name vN"), mode, n_revisions, flags (JSON),
    prompt_tail (the prompt's last 400 characters) and final (its first 160).
    """
    where, args = where_clause(db, f)
    total = db.execute(f"select count(*) from chains c{where}", args).fetchone()[0]
    pages = max(1, math.ceil(total / size))
    page = min(max(1, int(page)), pages)
    sql = (
        "select c.id, c.run_id, m.name as model, k.name || ' v' || v.version as constitution, c.mode, "
        "c.n_revisions, c.flags, substr(c.prompt, -400) as prompt_tail, substr(c.final, 1, 160) as final "
        "from chains c left join models m on m.id = c.model_id "
        "left join constitution_versions v on v.id = c.constitution_version_id "
        "left join constitutions k on k.id = v.constitution_id"
        f"{where} order by c.id desc limit ? offset ?"
    )
    rows = list(db.query(sql, [*args, size, (page - 1) * size]))
    return ChainPage(rows, int(total), page, pages)


def filter_options(db: Database) -> dict[str, list[dict[str, Any]]]:
    """What each chain filter can take, from small tables only.

    runs: SL runs newest first (id, status, created_at; at most 500) · models: by name (id, name) ·
    versions: constitution versions by name then newest (id, name, version) · principles: critique
    principle names (name).
    """
    return {
        "runs": _rows(db, "select id, status, created_at from runs where kind = 'sl' order by id desc limit 500"),
        "models": _rows(db, "select id, name from models order by name"),
        "versions": _rows(db, "select v.id, k.name, v.version from constitution_versions v "
                              "join constitutions k on k.id = v.constitution_id order by k.name, v.version desc"),
        "principles": _rows(db, "select distinct name from principles where kind = 'critique' and name is not null "
                                "order by name"),
    }



def _rows(db: Database, sql: str) -> list[dict[str, Any]]:
    return list(db.query(sql))
