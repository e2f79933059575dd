"""AI labels as the Labels tab reads them: agreement rows, disagreements, one labelled pair, HHH results,
AI-labelled preference sets, and position consistency per feedback model.

Rows come back as stored (probabilities unrounded, meta JSON decoded); `cai.evals.agreement.summarize`
and `cai.evals.label_stats` turn them into figures.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from cai import data, runs, store

# Where each judge's per-pair order agreement is stored, and the config field naming the judge.
CONSISTENCY_SOURCES = (("agreement", "agreement_pairs", "feedback_model"),
                       ("label", "feedback_labels", "feedback_model"), ("hhh", "hhh_results", "model"))


def agreement_rows(db: Database, run_id: int) -> list[dict[str, Any]]:
    """An agreement run's labels in pair order: pair_id, principle, p_chosen, p_first, p_second."""
    return list(db["agreement_pairs"].rows_where("run_id = ?", [run_id], order_by="pair_id",
                                                 select="pair_id, principle, p_chosen, p_first, p_second"))


def agreement_runs(db: Database, prefs: str | None, limit: int = 500) -> list[dict[str, Any]]:
    """Agreement runs over the human preference set `prefs`, newest first (as `cai.runs.get_run` gives them)."""
    return [r for r in runs.list_runs(db, kind="agreement", limit=limit) if r["config"].get("prefs") == prefs]


def disagreements(db: Database, run_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Pairs where the AI preferred the response the human rejected (p_chosen < 0.5), most confident first.

    Each row: pair_id, principle, p_chosen, p_first, p_second, prompt_tail (the prompt's last 200 characters).
    """
    return list(db.query(
        "select a.pair_id, a.principle, a.p_chosen, a.p_first, a.p_second, substr(p.prompt, -200) as prompt_tail "
        "from agreement_pairs a join pairs p on p.id = a.pair_id where a.run_id = ? and a.p_chosen < 0.5 "
        "order by a.p_chosen, a.pair_id limit ?", [run_id, limit]))


def agreement_pair(db: Database, run_id: int, pair_id: int) -> dict[str, Any]:
    """One pair as an agreement run labelled it: the label (principle, p_chosen, p_first, p_second, meta
    decoded) and the pair's texts (prompt, chosen, rejected). Raises LookupError when it has no label."""
    rows = list(db.query(
        "select a.principle, a.p_chosen, a.p_first, a.p_second, a.meta, p.prompt, p.chosen, p.rejected "
        "from agreement_pairs a join pairs p on p.id = a.pair_id where a.run_id = ? and a.pair_id = ?",
        [run_id, pair_id]))
    if not rows:
        raise LookupError(f"run {run_id} has no label for pair {pair_id}")
    return {**rows[0], "meta": store.loads(rows[0]["meta"], {})}


def consistency_by_model(db: Database) -> list[dict[str, Any]]:
    """Position consistency per judge model and source (agreement, label and HHH runs), from the stored
    per-pair `consistent` flags; runs from before the flag existed are left out.

    Rows sorted by (model, source): model, source, runs, pairs (scored in both orders), consistent (the
    share of those whose two orders agree, 4 decimals).
    """
    runs_of: dict[int, dict[str, Any]] = {}
    totals: dict[tuple[str, str], list[int]] = {}
    for source, table, field in CONSISTENCY_SOURCES:
        sql = (f"select run_id, count(consistent), coalesce(sum(consistent), 0) from {table} "
               "where consistent is not null group by run_id")
        for run_id, n, k in db.execute(sql).fetchall():
            if run_id not in runs_of:
                runs_of[run_id] = runs.get_run(db, int(run_id))
            model = str(runs_of[run_id]["config"].get(field) or "?")
            t = totals.setdefault((model, source), [0, 0, 0])
            t[0], t[1], t[2] = t[0] + 1, t[1] + int(n), t[2] + int(k)
    return [{"model": m, "source": src, "runs": t[0], "pairs": t[1],
             "consistent": round(t[2] / t[1], 4) if t[1] else None} for (m, src), t in sorted(totals.items())]


def hhh_results(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """One row per HHH run with a result, newest first: run, model, cot, samples, n, accuracy,
    accuracy_order_avg, correct_shown_A, correct_shown_B (accuracy when the correct answer is shown as (A)/(B))."""
    out = []
    for r in runs.list_runs(db, kind="hhh", limit=limit):
        res = r["result"] or {}
        if not res:
            continue
        both = res.get("position", {}).get("both_orders", {})
        out.append({
            "run": r["id"], "model": res.get("model") or r["config"].get("model"), "cot": bool(res.get("cot")),
            "samples": res.get("samples"), "n": res.get("n"), "accuracy": res.get("accuracy"),
            "accuracy_order_avg": res.get("accuracy_order_avg"), "correct_shown_A": both.get("correct_shown_A"),
            "correct_shown_B": both.get("correct_shown_B"),
        })
    return out


def ai_pairs(db: Database, name: str) -> list[dict[str, Any]]:
    """The pairs of a preference set in order with their soft labels: id, prompt, p, p_first (p that the
    first sampled response is better) and the principles behind each. Raises LookupError for an unknown set."""
    set_id = data.get_pref_set(db, name)["id"]
    out = []
    for r in db.query("select id, prompt, p, meta from pairs where set_id = ? order by position", [set_id]):
        m = store.loads(r["meta"], {})
        out.append({"id": r["id"], "prompt": r["prompt"], "p": r["p"], "p_first": m.get("p"),
                    "principles": list(m.get("principles") or [])})
    return out


def pair(db: Database, pair_id: int) -> dict[str, Any]:
    """One stored preference pair (prompt, chosen, rejected, p, meta decoded); LookupError when absent."""
    rows = list(db.query("select p.prompt, p.chosen, p.rejected, p.p, p.meta from pairs p join pref_sets s "
                         "on s.id = p.set_id where p.id = ?", [pair_id]))
    if not rows:
        raise LookupError(f"no pair {pair_id}")
    return {**rows[0], "meta": store.loads(rows[0]["meta"], {})}
