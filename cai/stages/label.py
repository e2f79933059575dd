"""Stage "label": soft AI preference labels for a pairs run, then an AI preference set (engine: cai.feedback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import FEEDBACK_DEFAULT
from cai.config import (
    MODELS,
    ConfigError,
    StageConfig,
    _f,
    constitution_field,
    constitution_version_field,
    inconsistent_field,
    tie_band_field,
)
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class LabelConfig(StageConfig):
    kind: ClassVar[str] = "label"
    pairs: int = _f(0, "The pairs run whose response pairs to label.", min=1, ref="runs:pairs", required='choose a response pairs run (launch a “Response pairs” run first)')
    feedback_model: str = _f(FEEDBACK_DEFAULT, "Feedback model that reads the comparison prompt.", ref=MODELS, subject=True)
    constitution: str = constitution_field()
    constitution_version: int | None = constitution_version_field()
    ensemble: int = _f(1, "Comparison principles per pair (their p are averaged).", min=1)
    both_orders: bool = _f(True, "Score (A, B) and (B, A) and average: cancels position bias.")
    few_shot: int = _f(
        0,
        "Few-shot comparison exemplars prepended (the constitution's, in order). The paper's choice: few-shot "
        "(its RLMadisonFewShotPrompts.json ships 5); 0 here keeps CPU labelling fast.",
        min=0,
    )
    cot: bool = _f(False, "Chain of thought: the model reasons first; p is clamped.")
    cot_samples: int = _f(1, "CoT samples per pair, averaged.", min=1)
    cot_temperature: float = _f(
        1.0, "Sampling temperature of CoT reasoning when cot_samples > 1 (one sample: greedy).", min=0.0
    )
    clamp_low: float = _f(0.4, "Lower clamp for CoT labels.", min=0.0, max=1.0)
    clamp_high: float = _f(0.6, "Upper clamp for CoT labels.", min=0.0, max=1.0)
    batch_size: int = _f(8, "Pairs per batch.", min=1)
    max_new_tokens: int = _f(128, "Token limit for CoT reasoning.", min=1)
    seed: int = _f(0, "Seed for principle draws and CoT sampling.")
    name: str = _f("", "Name of the AI preference set written; empty = labels-<run id>.")
    tie_band: float = tie_band_field()
    inconsistent: str = inconsistent_field()

    def validate(self) -> None:
        if self.clamp_low > self.clamp_high:
            raise ConfigError("clamp_low must be <= clamp_high")


def run(ctx: RunContext) -> dict[str, Any]:
    """Soft labels for a pairs run, stored per pair (step progress per backend batch), then an AI preference set."""
    from dataclasses import asdict

    from cai import constitution, data, store
    from cai import feedback as F
    from cai.backends.precision import scoring_dtype
    from cai.evals import consistency
    from cai.stages.hhh import dtype_summary

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, LabelConfig)
    opts = F.LabelOptions.from_config(cfg)
    version = constitution.resolve_version(db, cfg.constitution, cfg.constitution_version)
    principles = F.comparison_principles(version)
    exemplars = F.comparison_exemplars(version, cfg.few_shot, cfg.cot)
    ctx.link(model=cfg.feedback_model, constitution_version=version)
    name = cfg.name or f"labels-{ctx.run_id}"
    owner = [r["run_id"] for r in db.table("pref_sets").rows_where("name = ?", [name], select="run_id")]
    if owner and owner[0] != ctx.run_id:
        raise ValueError(f"preference set {name!r} already exists (from run {owner[0]}); choose another name")
    pairs = list(db.table("response_pairs").rows_where("run_id = ?", [cfg.pairs], order_by="prompt_id"))
    if not pairs:
        raise ValueError(f"run {cfg.pairs} has no response pairs (is it a finished 'pairs' run?)")
    todo = ctx.resume(pairs, lambda p: p["id"], "feedback_labels", "pair_id")

    def build(backend: Any, chunk: list[dict[str, Any]], first: int) -> int:
        where = F.span(first, len(chunk), len(pairs))
        items = [F.PairItem(p["prompt_id"], p["prompt"], p["response_a"], p["response_b"]) for p in chunk]
        labels = F.label_pairs(backend, items, principles, opts, exemplars,
                               on_phase=lambda part: ctx.set_phase(f"{where}: {part}"), on_batch=ctx.step)
        dtype = scoring_dtype(backend)  # stored with every label: bf16 answers can flip near 0.5
        db.table("feedback_labels").insert_all(
            {
                "run_id": ctx.run_id,
                "pair_id": p["id"],
                "principles": store.dumps(F.principles_of(lab.readings)),
                "created_at": store.now(),
                **with_dtype(F.consistency_fields(lab, cfg.tie_band, cfg.inconsistent), dtype),
            }
            for p, lab in zip(chunk, labels, strict=True)
        )
        return 0  # CoT tokens are counted per step

    per_pair = F.readings_per_pair(opts)
    ctx.work(pairs, model=cfg.feedback_model, todo=todo, build=build, batches=cfg.batch_size,
             steps=lambda p: per_pair, purpose="score")
    stored = {r["pair_id"]: r for r in db.table("feedback_labels").rows_where("run_id = ?", [ctx.run_id])}
    prefs = []
    for p in pairs:
        row = stored[p["id"]]
        meta = {**store.loads(row["meta"]), "response_pair_id": p["id"], "prompt_id": p["prompt_id"]}
        prefs.append(F.to_preference(p["prompt"], p["response_a"], p["response_b"], row["p"], meta))
    if owner:  # a resumed run that had already written its set
        set_id = next(db.table("pref_sets").rows_where("name = ?", [name]))["id"]
    else:
        provenance = {
            "run_id": ctx.run_id,
            "pairs_run": cfg.pairs,
            "feedback_model": cfg.feedback_model,
            "constitution": version["name"],
            "constitution_version": version["version"],
            "options": asdict(opts),
        }
        set_id = data.create_pref_set(
            db, name, "ai", "harmless", prefs, provenance=provenance, run_id=ctx.run_id
        )
    ps = [x["p"] for x in prefs]
    flags = [(row["consistent"], store.loads(row["meta"])) for row in stored.values()]
    result = {
        "consistency": {
            **consistency.rate(None if f is None else bool(f) for f, _ in flags),
            "per_principle": consistency.by_group(
                (name, flag) for _, meta in flags for name, flag in meta.get("consistent_by_principle", {}).items()
            ),
        },
        "inconsistent": cfg.inconsistent,
        "pref_set": name,
        "pref_set_id": set_id,
        "labels": len(prefs),
        "mean_p": round(F.ensemble(ps), 4),
        "confident": sum(p >= 0.6 for p in ps),
        "constitution_version_id": version["id"],
        **dtype_summary([meta for _, meta in flags]),
    }
    ctx.log(f"wrote {len(prefs)} AI labels to preference set {name!r} (scored in {result['dtype']}"
            + (f", {result['near_ties']} within its noise of 0.5)" if result["near_ties"] else ")"))
    return result


def with_dtype(fields: dict[str, Any], dtype: str | None) -> dict[str, Any]:
    from cai import store

    return {**fields, "meta": store.dumps({**store.loads(fields["meta"]), "dtype": dtype})}


STAGE = Stage("label", LabelConfig, "AI labels (feedback model)", "AI preference labels for response pairs", run)
