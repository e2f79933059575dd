"""Stage "hhh": the HHH eval of a model used as a feedback model (the eval: cai.evals.hhh)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import FEEDBACK_DEFAULT
from cai.config import MODELS, StageConfig, _f, inconsistent_field, tie_band_field
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class HHHConfig(StageConfig):
    kind: ClassVar[str] = "hhh"
    data: str = _f("", "HHH eval file (JSONL with prompt, corrects, incorrects).", required='give the HHH eval file (JSONL with prompt, corrects, incorrects)')
    model: str = _f(FEEDBACK_DEFAULT, "Model evaluated as a feedback model.", ref=MODELS, subject=True)
    cot: bool = _f(False, "Chain of thought before the answer.")
    samples: int = _f(1, "CoT samples per comparison, averaged.", min=1)
    cot_temperature: float = _f(
        1.0, "Sampling temperature of CoT reasoning when samples > 1 (one sample: greedy).", min=0.0
    )
    clamp_low: float = _f(0.0, "Lower clamp for CoT readings (0 = none: the paper clamps labels, not this eval).", min=0.0, max=1.0)
    clamp_high: float = _f(1.0, "Upper clamp for CoT readings (1 = none).", min=0.0, max=1.0)
    limit: int | None = _f(None, "Use only the first N comparisons.", min=1)
    batch_size: int = _f(8, "Comparisons per batch.", min=1)
    max_new_tokens: int = _f(128, "Token limit for CoT reasoning.", min=1)
    seed: int = _f(0, "Seed for CoT sampling.")
    tie_band: float = tie_band_field()
    inconsistent: str = inconsistent_field()


def run(ctx: RunContext) -> dict[str, Any]:
    """Evaluate in batches, storing each comparison's row (step progress per backend batch); resumes past stored rows."""
    from cai import store
    from cai.backends.precision import scoring_dtype
    from cai.evals import hhh
    from cai.feedback import LabelOptions, span

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, HHHConfig)
    items = hhh.read_hhh(cfg.data, cfg.limit)
    per_item = 2 * (cfg.samples if cfg.cot else 1)  # both orders x CoT samples
    opts = LabelOptions.from_config(cfg, cot_samples=cfg.samples, batch_size=cfg.batch_size * per_item)
    ctx.link(model=cfg.model)
    todo = ctx.resume(items, lambda it: it.idx, "hhh_results", "idx")

    def build(backend: Any, chunk: list[hhh.Comparison], first: int) -> int:
        where = span(first, len(chunk), len(items), "comparisons")
        rows = hhh.evaluate(backend, chunk, opts, cfg.tie_band, cfg.inconsistent,
                            on_phase=lambda part: ctx.set_phase(f"{where}: {part}"), on_batch=ctx.step)
        dtype = scoring_dtype(backend)  # stored with every row: bf16 answers can flip near 0.5
        db.table("hhh_results").insert_all({**r, "run_id": ctx.run_id, "meta": store.dumps({**r["meta"], "dtype": dtype})}
                                           for r in rows)
        return 0  # CoT tokens are counted per step

    ctx.work(items, model=cfg.model, todo=todo, build=build, batches=cfg.batch_size,
             steps=lambda it: per_item * (2 if cfg.cot else 1), purpose="score")
    wanted = {it.idx for it in items}
    rows = [r for r in db.table("hhh_results").rows_where("run_id = ?", [ctx.run_id], order_by="idx") if r["idx"] in wanted]
    summary = hhh.summarize(rows, cfg.tie_band)
    precision = dtype_summary([store.loads(r["meta"]) for r in rows])
    ctx.log(
        f"HHH accuracy {summary['accuracy']} (order-averaged {summary['accuracy_order_avg']}) on {len(rows)}, "
        f"position consistency {summary['consistency']['rate']}, scored in {precision['dtype']}"
        + (f", {precision['near_ties']} within its noise of 0.5" if precision["near_ties"] else "")
    )
    return {**summary, "model": cfg.model, "data": str(cfg.data), "cot": cfg.cot, "samples": cfg.samples,
            "inconsistent": cfg.inconsistent, **precision}


def dtype_summary(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The dtype the rows were scored in (several, joined, if a resume ran in another) and how many items
    have a reading within that dtype's noise of 0.5 (None where the dtype is not known)."""
    from cai.backends.precision import UNIT_ROUNDOFF, near_tie

    dtypes = sorted({str(m.get("dtype")) for m in metas if m.get("dtype")})
    near = [near_tie([r["logprobs"] for r in m.get("readings", [])], m["dtype"]) for m in metas
            if m.get("dtype") in UNIT_ROUNDOFF]
    return {"dtype": "+".join(dtypes) or None, "near_ties": sum(near) if near else None}


STAGE = Stage("hhh", HHHConfig, "HHH eval", "the HHH eval of a feedback model", run)
