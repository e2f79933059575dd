"""Stage "agreement": agreement of a feedback model's soft labels with human choices (cai.evals.agreement)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import FEEDBACK_DEFAULT
from cai.config import (
    MODELS,
    PREFS,
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
class AgreementConfig(StageConfig):
    kind: ClassVar[str] = "agreement"
    prefs: str = _f("", "Human preference set to compare with.", ref=PREFS, required='choose a human preference set (import one on the Labels tab or with `cai prefs import`)')
    feedback_model: str = _f(FEEDBACK_DEFAULT, "Feedback model that labels the human pairs.", ref=MODELS, subject=True)
    constitution: str = constitution_field()
    constitution_version: int | None = constitution_version_field()
    principles: str = _f("", "Comparison principle names (several words, or comma-separated); empty = all enabled.",
                         several=True)
    both_orders: bool = _f(True, "Score both option orders and average.")
    limit: int | None = _f(None, "Use only the first N pairs.", min=1)
    batch_size: int = _f(8, "Pairs per batch.", min=1)
    bins: int = _f(10, "Calibration bins.", min=2)
    seed: int = _f(0, "Seed for principle draws.")
    tie_band: float = tie_band_field()
    inconsistent: str = inconsistent_field()

    def principle_names(self) -> list[str]:
        return [n.strip() for n in self.principles.split(",") if n.strip()]


def run(ctx: RunContext) -> dict[str, Any]:
    """Label each human pair and store its row (step progress per backend batch), then summarize; resumes."""
    from cai import constitution, data, store
    from cai import feedback as F
    from cai.backends.precision import scoring_dtype
    from cai.evals import agreement
    from cai.stages.hhh import dtype_summary

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, AgreementConfig)
    version = constitution.resolve_version(db, cfg.constitution, cfg.constitution_version)
    principles = F.comparison_principles(version, cfg.principle_names())
    opts = F.LabelOptions.from_config(cfg, ensemble=1, batch_size=cfg.batch_size * 2)
    ctx.link(model=cfg.feedback_model, constitution_version=version)
    pairs = data.list_pairs(db, cfg.prefs, limit=cfg.limit)
    if not pairs:
        raise ValueError(f"preference set {cfg.prefs!r} has no pairs")
    todo = ctx.resume(pairs, lambda p: p["id"], "agreement_pairs", "pair_id")

    def build(backend: Any, chunk: list[dict[str, Any]], first: int) -> int:
        where = F.span(first, len(chunk), len(pairs))
        items = [F.PairItem(p["id"], p["prompt"], p["chosen"], p["rejected"]) for p in chunk]
        labels = F.label_pairs(backend, items, principles, opts,
                               on_phase=lambda part: ctx.set_phase(f"{where}: {part}"), on_batch=ctx.step)
        db.table("agreement_pairs").insert_all(
            {**agreement.pair_row(p["id"], lab, cfg.tie_band, cfg.inconsistent), "run_id": ctx.run_id,
             "meta": store.dumps({**lab.meta(), "dtype": scoring_dtype(backend)})}
            for p, lab in zip(chunk, labels, strict=True)
        )
        return 0

    per_pair = F.readings_per_pair(opts)
    ctx.work(pairs, model=cfg.feedback_model, todo=todo, build=build, batches=cfg.batch_size,
             steps=lambda p: per_pair, purpose="score")
    wanted = {p["id"] for p in pairs}
    rows = [r for r in db.table("agreement_pairs").rows_where("run_id = ?", [ctx.run_id]) if r["pair_id"] in wanted]
    result = agreement.summarize(rows, cfg.bins, cfg.tie_band)
    ctx.log(
        f"agreement {result['agreement']} on {result['n']} pairs ({result['ties']} ties), ECE {result['ece']}, "
        f"position consistency {result['consistency']['rate']}, kappa {result['kappa']}"
    )
    return {
        **result,
        **dtype_summary([store.loads(r["meta"]) for r in rows]),
        "prefs": cfg.prefs,
        "feedback_model": cfg.feedback_model,
        "constitution_version": version["version"],
        "inconsistent": cfg.inconsistent,
    }


STAGE = Stage("agreement", AgreementConfig, "AI vs human agreement", "agreement of AI labels with human preferences",
              run, aliases={"--feedback": "feedback_model", "--one-order": ("both_orders", False)})
