"""Constitution experiments: did a constitution edit help? The same stages under each version, paired.

An experiment is an orchestrating run (kind "experiment") over ordinary runs: for each version (arm)
one run per stage with the same prompts, seed and options, created up front and linked in
`experiment_runs`, then executed in order in the experiment's worker. Principle draws are seeded per
(seed, prompt) and index the version's principle list, so an edited principle is drawn where the
original was. Deltas against the first version are paired per prompt (or human pair) with a
bootstrap confidence interval; an interval that contains 0 is reported as within noise. `principle_draws`
says how often each changed principle was drawn per stage run and warns when a finished run never drew it
(a delta of 0 then says nothing about the edit); the SL runs can draw only named principles or stratify.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlite_utils import Database

from cai import runs, store
from cai.config import StageConfig
from cai.evals.paired import paired_bootstrap
from cai.run_context import RunContext
from cai.stages import (
    AgreementConfig,
    ExperimentConfig,
    LabelConfig,
    RevisionScoresConfig,
    SFTStageConfig,
    SLConfig,
)
from cai.stages.experiment import parse_versions

METRICS = {
    "pm_final": "mean PM score of the final revision",
    "flagged": "rate of flagged chains",
    "copied": "rate of chains with a copied step",
    "unchanged": "rate of final revisions identical to the initial response",
    "agreement": "label agreement with the human choices",
    "label_p": "mean AI label p(response A better)",
}


# ----------------------------------------------------------------------------- pure pieces


def chain_metrics(chain: dict[str, Any], steps: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Per-prompt metrics of one chain (steps in order): final PM score, flagged, copied, unchanged (0/1)."""
    responses = [s for s in steps if s["kind"] in ("initial", "revision")]
    flags = store.loads(chain["flags"], []) if isinstance(chain["flags"], str) else chain["flags"]
    final_score = responses[-1]["pm_score"] if responses else None
    return {
        "pm_final": None if final_score is None else float(final_score),
        "flagged": float(bool(flags)),
        "copied": float(any(f.endswith(":copied") for f in flags)),
        "unchanged": float(len(responses) > 1 and responses[-1]["output"].strip() == responses[0]["output"].strip()),
    }


def credit(p: float) -> float:
    """Agreement credit with no tie band: 1, 0.5 at exactly p = 0.5, else 0."""
    from cai.evals.consistency import credit as _credit

    return _credit(p, 0.0)


# ----------------------------------------------------------------------------- creating


def _stage_config(cfg: ExperimentConfig, stage: str, name: str, version: int, sl_run: int | None,
                  tag: str) -> StageConfig:
    feedback = cfg.feedback_model or cfg.model
    if stage == "sl":
        return SLConfig(prompts=cfg.prompts, model=cfg.model, constitution=name, constitution_version=version,
                        revisions=cfg.revisions, few_shot=cfg.few_shot, limit=cfg.limit, batch_size=cfg.batch_size,
                        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
                        principles=cfg.principles, stratified=cfg.stratified)
    assert stage in ("label", "agreement") or sl_run is not None
    if stage == "scores":
        return RevisionScoresConfig(run=sl_run or 0, pm=cfg.pm, batch_size=cfg.batch_size)
    if stage == "sft":
        return SFTStageConfig(chains=sl_run or 0, name=f"{tag}-sft", lora=cfg.sft_lora, max_steps=cfg.sft_max_steps,
                         seed=cfg.seed)
    if stage == "label":
        return LabelConfig(pairs=cfg.pairs or 0, feedback_model=feedback, constitution=name,
                           constitution_version=version, batch_size=cfg.batch_size, seed=cfg.seed,
                           name=f"{tag}-labels")
    return AgreementConfig(prefs=cfg.prefs, feedback_model=feedback, constitution=name, constitution_version=version,
                           limit=cfg.pair_limit, batch_size=cfg.batch_size, seed=cfg.seed)


def ensure_children(db: Database, run_id: int, cfg: ExperimentConfig) -> int:
    """The experiment row of an orchestrating run and its stage runs, created once; returns the experiment id."""
    from cai.constitution import resolve_version

    rows = list(db["experiments"].rows_where("run_id = ?", [run_id]))
    if rows:
        return int(rows[0]["id"])
    arms = [(n, v, resolve_version(db, n, v)) for n, v in parse_versions(cfg.versions)]
    with db.atomic():
        exp_id = int(db.table("experiments").insert(
            {"run_id": run_id, "config": store.dumps(cfg.to_dict()), "created_at": store.now()}).last_pk or 0)
        sl_runs: dict[int, int] = {}
        position = 0
        for stage in (s for s in ("sl", "scores", "sft", "label", "agreement") if s in cfg.stage_list()):
            for arm, (name, version, cv) in enumerate(arms):
                child = _stage_config(cfg, stage, name, version, sl_runs.get(arm), f"exp{exp_id}-{name}-v{version}")
                child_id = runs.create_run(db, child, **runs.resolve_links(db, child), parent=run_id)
                if stage == "sl":
                    sl_runs[arm] = child_id
                db.table("experiment_runs").insert({
                    "experiment_id": exp_id, "arm": arm, "version": f"{name}@{version}",
                    "constitution_version_id": cv["id"], "stage": stage, "run_id": child_id, "position": position,
                })
                position += 1
    return exp_id


def create(db: Database, cfg: ExperimentConfig) -> tuple[int, int]:
    """Create an experiment (its run, its stage runs, the links) without starting it: (experiment id, run id)."""
    run_id = runs.create_run(db, cfg)
    try:
        return ensure_children(db, run_id, cfg), run_id
    except Exception:
        db.table("runs").delete(run_id)  # a bad version name leaves no half-made experiment behind
        raise


def start(db: Database, db_path: Any, cfg: ExperimentConfig) -> tuple[int, int]:
    """Create an experiment and launch its worker: (experiment id, run id)."""
    exp_id, run_id = create(db, cfg)
    runs.launch(db_path, run_id)
    return exp_id, run_id


# ----------------------------------------------------------------------------- running a stage run (cai.stages.experiment)


def db_file(db: Database) -> str:
    row = db.execute("pragma database_list").fetchone()
    return str(row[2] or "")


def forward_cancel(path: str, parent: int, child: int, stop: threading.Event, poll: float = 0.3) -> None:
    """While a stage run executes, pass a cancel request of its experiment on to it (own connection)."""
    if not path:  # an in-memory database: nobody else can request a cancel
        return
    conn = sqlite3.connect(path, timeout=30)
    try:
        while not stop.wait(poll):
            row = conn.execute("select cancel_requested from runs where id = ?", [parent]).fetchone()
            if row and row[0]:
                conn.execute("update runs set cancel_requested = 1 where id = ?", [child])
                conn.commit()
                return
    finally:
        conn.close()


# ----------------------------------------------------------------------------- reading


def links(db: Database, exp_id: int) -> list[dict[str, Any]]:
    rows = list(db["experiment_runs"].rows_where("experiment_id = ?", [exp_id], order_by="position"))
    if not rows:
        raise LookupError(f"no experiment with id {exp_id}")
    return rows


def _arms(db: Database, exp_id: int) -> list[dict[str, Any]]:
    arms: dict[int, dict[str, Any]] = {}
    for r in links(db, exp_id):
        arms.setdefault(r["arm"], {"arm": r["arm"], "version": r["version"], "runs": {}})["runs"][r["stage"]] = r["run_id"]
    return [arms[k] for k in sorted(arms)]


def _chains(db: Database, sl_run: int) -> dict[int, dict[str, Any]]:
    """prompt_id -> chain with its steps, of an SL run's red-team chains."""
    out = {}
    for c in db["chains"].rows_where("run_id = ? and mode != 'helpful'", [sl_run], order_by="prompt_id"):
        steps = list(db["chain_steps"].rows_where("chain_id = ?", [c["id"]], order_by="idx"))
        out[c["prompt_id"]] = {**c, "steps": steps}
    return out


def deltas(db: Database, exp_id: int) -> dict[str, Any]:
    """Per-version means and paired deltas against the baseline version, with bootstrap CIs."""
    cfg = ExperimentConfig.from_dict(store.loads(get(db, exp_id)["config"]))
    arms = _arms(db, exp_id)
    # metric -> principle ("" = all) -> arm -> item key -> value
    values: dict[str, dict[str, dict[int, dict[Any, float]]]] = defaultdict(lambda: defaultdict(dict))
    for a in arms:
        if "sl" in a["runs"]:
            for pid, chain in _chains(db, a["runs"]["sl"]).items():
                for metric, v in chain_metrics(chain, chain["steps"]).items():
                    if v is not None:
                        values[metric][""].setdefault(a["arm"], {})[pid] = v
        if "agreement" in a["runs"]:
            for r in db["agreement_pairs"].rows_where("run_id = ?", [a["runs"]["agreement"]]):
                values["agreement"][""].setdefault(a["arm"], {})[r["pair_id"]] = credit(r["p_chosen"])
                values["agreement:principle"][r["principle"]].setdefault(a["arm"], {})[r["pair_id"]] = credit(r["p_chosen"])
        if "label" in a["runs"]:
            for r in db["feedback_labels"].rows_where("run_id = ?", [a["runs"]["label"]]):
                values["label_p"][""].setdefault(a["arm"], {})[r["pair_id"]] = float(r["p"])
    per_principle = values.pop("agreement:principle", {})
    if per_principle:
        # Per principle: the pairs whose baseline draw was that principle, paired with the same pairs in each
        # version (draws are seeded per pair and index the principle list, so an edit keeps its slot).
        base_principle = {k: p for p, arms_ in per_principle.items() for k in arms_.get(0, {})}
        overall = values.get("agreement", {}).get("", {})
        for p in sorted(set(base_principle.values())):
            values["agreement"][p] = {arm: {k: v for k, v in items.items() if base_principle.get(k) == p}
                                      for arm, items in overall.items()}
    out_means, out_deltas = [], []
    for metric in [m for m in METRICS if m in values]:
        for principle, by_arm in values[metric].items():
            base = by_arm.get(0, {})
            for a in arms:
                items = by_arm.get(a["arm"], {})
                out_means.append({"metric": metric, "principle": principle, "version": a["version"],
                                  "mean": round(sum(items.values()) / len(items), 6) if items else None,
                                  "n": len(items)})
                if a["arm"] == 0:
                    continue
                keys = sorted(set(base) & set(items))
                d = paired_bootstrap([base[k] for k in keys], [items[k] for k in keys], n_boot=cfg.n_boot,
                                     seed=cfg.seed, confidence=cfg.confidence)
                out_deltas.append({"metric": metric, "principle": principle, "baseline": arms[0]["version"],
                                   "version": a["version"], **asdict(d), "within_noise": d.within_noise})
    return {"arms": arms, "means": out_means, "deltas": out_deltas, "confidence": cfg.confidence}


# Which stages draw which kind of principle: SL chains draw critique principles, labels comparison ones.
DRAWING_STAGES = {"critique": ("sl",), "comparison": ("label", "agreement")}


def stage_draws(db: Database, stage: str, run_id: int) -> dict[str, int]:
    """How often a stage run drew each principle: SL revision rounds, agreement pairs, label readings."""
    if stage == "sl":
        sql = ("select s.principle, count(*) from chain_steps s join chains c on c.id = s.chain_id "
               "where c.run_id = ? and s.kind = 'revision' group by s.principle")
        return {str(p): int(n) for p, n in db.execute(sql, [run_id]).fetchall()}
    if stage == "agreement":
        sql = "select principle, count(*) from agreement_pairs where run_id = ? group by principle"
        return {str(p): int(n) for p, n in db.execute(sql, [run_id]).fetchall()}
    if stage == "label":
        out: dict[str, int] = defaultdict(int)
        for (names,) in db.execute("select principles from feedback_labels where run_id = ?", [run_id]).fetchall():
            for n in store.loads(names, []):
                out[str(n)] += 1
        return dict(out)
    return {}


def principle_draws(db: Database, exp_id: int) -> dict[str, Any]:
    """Per version, each principle changed from the baseline (changed, added, removed) and how often each stage
    run that draws that kind of principle drew it, in the baseline and in the version; a warning for each
    finished run that never drew a changed principle (its deltas cannot show that edit)."""
    from cai.constitution import resolve_version
    from cai.constitution.diff import diff

    arms = _arms(db, exp_id)
    resolved = {a["arm"]: resolve_version(db, *_version_spec(a["version"])) for a in arms}
    rows, warnings = [], []
    for a in arms[1:]:
        for change in (c for c in diff(resolved[0], resolved[a["arm"]]) if c["target"] == "principle"):
            for stage in DRAWING_STAGES.get(change["kind"], ()):
                if stage not in a["runs"]:
                    continue
                run = runs.get_run(db, a["runs"][stage])
                drawn = stage_draws(db, stage, a["runs"][stage])
                base = stage_draws(db, stage, arms[0]["runs"][stage])
                row = {"version": a["version"], "principle": change["name"], "change": change["change"],
                       "kind": change["kind"], "stage": stage, "draws": drawn.get(change["name"], 0),
                       "of": sum(drawn.values()), "baseline_draws": base.get(change["name"], 0),
                       "baseline_of": sum(base.values()), "status": run["status"]}
                rows.append(row)
                # A removed principle can only be drawn by the baseline; a changed or added one by the version.
                seen, of, where = ((row["baseline_draws"], row["baseline_of"], arms[0]["version"])
                                   if change["change"] == "removed" else (row["draws"], row["of"], a["version"]))
                if run["status"] == "done" and seen == 0:
                    warnings.append(
                        f"{a['version']}: the {change['change']} {change['kind']} principle {change['name']!r} was "
                        f"never drawn by the {stage} run of {where} (0 of {of} draws): the deltas cannot show this "
                        f"edit. Rerun with principles={change['name']} (draw only these) or stratified (each "
                        "principle equally often).")
    return {"principle_draws": rows, "warnings": warnings}


def _version_spec(spec: str) -> tuple[str, int]:
    name, version = spec.rsplit("@", 1)
    return name, int(version)


def get(db: Database, exp_id: int) -> dict[str, Any]:
    try:
        return dict(db.table("experiments").get(exp_id))
    except Exception:
        raise LookupError(f"no experiment with id {exp_id}") from None


def show(db: Database, exp_id: int) -> dict[str, Any]:
    """An experiment: its config, orchestrating run, each stage run's status, and the deltas so far."""
    exp = get(db, exp_id)
    run = runs.get_run(db, exp["run_id"])
    children = []
    for r in links(db, exp_id):
        child = runs.get_run(db, r["run_id"])
        children.append({"version": r["version"], "stage": r["stage"], "run_id": r["run_id"],
                         "status": child["status"], "done": child["done"], "total": child["total"],
                         "error": child["error"]})
    return {"id": exp_id, "run_id": exp["run_id"], "status": run["status"], "error": run["error"],
            # counted from the stage runs it lists (the orchestrating run's own counter is 0/0 until it starts)
            "done": sum(1 for c in children if c["status"] == "done"), "total": len(children),
            "config": store.loads(exp["config"]),
            "created_at": exp["created_at"], "runs": children, **deltas(db, exp_id),
            **principle_draws(db, exp_id)}


def list_experiments(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    out = []
    for e in db["experiments"].rows_where(order_by="id desc", limit=limit):
        cfg = store.loads(e["config"], {})
        run = runs.get_run(db, e["run_id"])
        out.append({"id": e["id"], "run_id": e["run_id"], "versions": cfg.get("versions", ""),
                    "prompts": cfg.get("prompts", ""), "model": cfg.get("model", ""), "stages": cfg.get("stages", ""),
                    "status": run["status"], "done": run["done"], "total": run["total"],
                    "created_at": e["created_at"]})
    return out


def paired(db: Database, exp_id: int) -> list[dict[str, Any]]:
    """Side by side per prompt: each version's final revision, principle draws, critiques, flags and score."""
    arms = [a for a in _arms(db, exp_id) if "sl" in a["runs"]]
    chains = {a["arm"]: _chains(db, a["runs"]["sl"]) for a in arms}
    if not arms:
        return []
    prompt_ids = sorted(set().union(*(c.keys() for c in chains.values())))
    rows = []
    for pid in prompt_ids:
        per = []
        prompt = ""
        for a in arms:
            c = chains[a["arm"]].get(pid)
            if c is None:
                per.append({"version": a["version"], "chain_id": None})
                continue
            prompt = c["prompt"]
            steps = c["steps"]
            per.append({
                "version": a["version"],
                "chain_id": c["id"],
                "initial": steps[0]["output"].strip() if steps else "",
                "final": c["final"],
                "principles": [s["principle"] for s in steps if s["kind"] == "revision"],
                "critiques": [s["output"].strip() for s in steps if s["kind"] == "critique"],
                "flags": store.loads(c["flags"], []),
                **{k: chain_metrics(c, steps)[k] for k in ("pm_final", "unchanged")},
            })
        rows.append({"prompt_id": pid, "prompt": prompt, "versions": per})
    return rows


def run(ctx: RunContext) -> dict[str, Any]:
    """Execute each stage run not yet done, in order (a cancel of the experiment is passed on to the one
    running), then compute the deltas."""
    db, cfg = ctx.db, ctx.config
    assert isinstance(cfg, ExperimentConfig)
    exp_id = ensure_children(db, ctx.run_id, cfg)
    children = links(db, exp_id)
    done = sum(1 for c in children if runs.get_run(db, c["run_id"])["status"] == "done")
    ctx.begin(done, len(children))
    for child in children:
        run = runs.get_run(db, child["run_id"])
        if run["status"] == "done":
            continue
        if run["status"] in ("failed", "cancelled", "interrupted"):
            runs.prepare_resume(db, run["id"])
        ctx.log(f"{child['stage']} for {child['version']}: run {run['id']}")
        stop = threading.Event()
        watcher = threading.Thread(target=forward_cancel, args=(db_file(db), ctx.run_id, run["id"], stop), daemon=True)
        watcher.start()
        try:
            run = runs.execute(db, run["id"])
        finally:
            stop.set()
            watcher.join()
        ctx.check_cancel()  # the experiment was cancelled: so was its running stage run
        if run["status"] != "done":
            raise RuntimeError(f"{child['stage']} run {run['id']} for {child['version']} is {run['status']}: "
                               f"{run['error'] or 'see its log'}")
        done += 1
        ctx.progress(done, len(children))
    result = deltas(db, exp_id)
    noisy = [d for d in result["deltas"] if d["within_noise"] is False]
    ctx.log(f"experiment {exp_id}: {len(result['deltas'])} deltas, {len(noisy)} outside noise")
    return {"experiment": exp_id, **result}
