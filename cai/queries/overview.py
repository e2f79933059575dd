"""The workbench at a glance: what the database holds, for the home page a researcher lands on.

One small count per table (each an indexed or tiny-table query, so the home page stays fast on a large
database), plus the next step of the paper's pipeline that has nothing yet (`next_step`).
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import runs


def _one(db: Database, sql: str, args: list[Any] | None = None) -> Any:
    return db.execute(sql, args or []).fetchone()[0]


def overview(db: Database) -> dict[str, Any]:
    """Counts and headlines, each key a page of the workbench.

    constitutions: [{name, version, critique, comparison, enabled, principles}] (latest version of each, oldest constitution first);
    models: registered names, oldest first; runs: {"active": [{id, kind, status, done, total, phase}],
    "by_status": {status: count}}; chains: {total, flagged}; prefs: {human, ai} (sets of each source);
    done: {kind: finished runs of that stage}; campaigns, votes, experiments: counts.
    """
    constitutions = list(db.query(
        "select c.name, v.version, coalesce(sum(p.kind = 'critique'), 0) as critique, "
        "coalesce(sum(p.kind = 'comparison'), 0) as comparison, coalesce(sum(p.enabled), 0) as enabled, "
        "count(p.id) as principles "
        "from constitutions c join constitution_versions v on v.constitution_id = c.id "
        "and v.version = (select max(version) from constitution_versions where constitution_id = c.id) "
        "left join principles p on p.version_id = v.id group by c.id order by c.id"))
    # Status after the liveness rule (`cai.runs.liveness`), as every other view shows it: a killed worker's
    # row still says "running" in the table, but the run is interrupted.
    judged = runs.live_runs(db, *runs.ACTIVE, "interrupted")  # every row marked active, judged
    active = [{"id": r["id"], "kind": r["kind"], "status": r["status"], "done": r["done"] or 0,
               "total": r["total"] or 0, "phase": r.get("phase")} for r in judged if r["status"] in runs.ACTIVE]
    marks = ", ".join("?" * len(runs.ACTIVE))
    by_status = {r["status"]: r["n"] for r in db.query(f"select status, count(*) as n from runs where status not in "
                                                         f"({marks}) group by status", list(runs.ACTIVE))}
    for r in judged:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    by_status = dict(sorted(by_status.items()))
    prefs = {r["source"]: r["n"] for r in db.query("select source, count(*) as n from pref_sets group by source")}
    return {
        "constitutions": constitutions,
        "models": [r[0] for r in db.execute("select name from models order by id")],
        "runs": {"active": active, "by_status": by_status},
        "chains": {"total": _one(db, "select count(*) from chains"),
                   "flagged": _one(db, "select count(*) from chains where coalesce(flags, '[]') not in ('', '[]')")},
        "prefs": {"human": prefs.get("human", 0), "ai": prefs.get("ai", 0)},
        "done": {r["kind"]: r["n"] for r in db.query("select kind, count(*) as n from runs where status = 'done' "
                                                     "group by kind order by kind")},
        "campaigns": _one(db, "select count(*) from campaigns"),
        "votes": _one(db, "select count(*) from votes"),
        "experiments": _one(db, "select count(*) from experiments"),
    }


# The paper's order, as the home page suggests it: (stage kind, why it comes next).
PIPELINE = [
    ("sl", "critique → revision chains under the constitution (try model tiny first: it answers in seconds)"),
    ("agreement", "how often the feedback model's labels agree with the human preference set"),
    ("pairs", "two answers per prompt for the feedback model to compare"),
    ("label", "AI labels on those pairs"),
    ("pm", "a preference model trained on the AI labels"),
    ("rl", "RL of the policy against the preference model"),
]


def next_step(glance: dict[str, Any]) -> tuple[str, str] | None:
    """(what to do next, the page that does it): the first missing thing in the paper's order, or None."""
    from cai.stages import REGISTRY

    if not glance["constitutions"]:
        return "Import or write a constitution.", "constitution"
    if not glance["done"]:  # nothing has run yet: the whole method in one go is the first step
        return ("Run the whole method at once: a pipeline of every stage, then the paper's figures on it "
                "(recipe smoke: the tiny test model, minutes; cpu-small: the embedded models).", "pipeline")
    for kind, why in PIPELINE:
        if kind == "agreement" and not glance["prefs"]["human"]:
            return "Import a human preference set to compare AI labels with.", "labels"
        if not glance["done"].get(kind):
            return f"Run “{REGISTRY[kind].label}”: {why}.", "dashboard"
    return None
