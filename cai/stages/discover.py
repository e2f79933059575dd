"""Stage "discover": principles that explain a preference set's choices, Inverse CAI (cai.discover)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import FEEDBACK_DEFAULT
from cai.config import (
    MODELS,
    PREFS,
    ConfigError,
    StageConfig,
    _f,
    constitution_field,
    constitution_version_field,
)
from cai.stages.base import Stage

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass
class DiscoverConfig(StageConfig):
    """Principle discovery from preferences (cai.discover, the Inverse CAI method)."""

    kind: ClassVar[str] = "discover"
    prefs: str = _f("", "Preference set (human or arena votes) whose choices the principles should explain.", ref=PREFS)
    feedback_model: str = _f(FEEDBACK_DEFAULT, "Model that proposes principles and labels the held-out pairs.", ref=MODELS, subject=True)
    constitution: str = constitution_field("Constitution the draft version extends; empty = the most recently changed one.")
    constitution_version: int | None = constitution_version_field("Version to extend; empty = the newest.")
    sample_pairs: int = _f(16, "Pairs (seeded sample) the feedback model proposes a principle for.", min=1)
    candidates: int = _f(5, "Most-supported candidates (after merging near-duplicates) to test.", min=1)
    test_pairs: int = _f(32, "Held-out pairs (disjoint from the sample) each candidate is tested on.", min=1)
    keep: int = _f(3, "Best-agreeing candidates written into the draft constitution version.", min=0)
    merge_threshold: float = _f(0.6, "Word-overlap (Jaccard) at which two proposals are merged.", min=0.0, max=1.0)
    max_new_tokens: int = _f(40, "Token limit of each proposal.", min=1)
    batch_size: int = _f(8, "Pairs per model call.", min=1)
    seed: int = _f(0, "Seed of the sample/held-out split and the labels.")

    def validate(self) -> None:
        if not self.prefs:
            raise ConfigError("prefs: name a preference set")


def run(ctx: RunContext) -> dict[str, Any]:
    """Propose, merge, test, and write the best candidates as a draft constitution version."""
    from dataclasses import asdict

    from cai import constitution, data
    from cai.backends.base import SamplingParams
    from cai.discover import STOP, merge, propose_prompt, rule_text, score_candidates, split

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, DiscoverConfig)
    base = constitution.resolve_version(db, cfg.constitution, cfg.constitution_version)
    pairs = {p["id"]: p for p in data.list_pairs(db, cfg.prefs)}
    if not pairs:
        raise ValueError(f"preference set {cfg.prefs!r} has no pairs")
    sample_ids, test_ids = split(sorted(pairs), cfg.sample_pairs, cfg.test_pairs, cfg.seed)
    ctx.link(model=cfg.feedback_model, constitution_version=base)
    total = len(sample_ids) + len(test_ids)
    ctx.begin(0, total)
    ctx.log(f"{len(sample_ids)} pairs propose, {len(test_ids)} held-out pairs test, with {cfg.feedback_model}")
    backend = ctx.backend(cfg.feedback_model)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed, stop=STOP)
    proposals: list[tuple[int, str]] = []
    for start in range(0, len(sample_ids), cfg.batch_size):
        chunk = [pairs[i] for i in sample_ids[start : start + cfg.batch_size]]
        outs = backend.generate([propose_prompt(p["prompt"], p["chosen"], p["rejected"]) for p in chunk], params)
        proposals += [(p["id"], rule_text(o.text)) for p, o in zip(chunk, outs, strict=True)]
        ctx.progress(len(proposals), total, tokens=sum(o.completion_tokens for o in outs))
    merged = merge(proposals, cfg.merge_threshold)
    tested = merged[: cfg.candidates]
    ctx.log(f"{sum(1 for _, t in proposals if t)} proposals merged into {len(merged)} candidates; "
            f"testing {len(tested)}")
    score_candidates(backend, tested, [pairs[i] for i in test_ids], cfg.batch_size, cfg.seed)
    ctx.progress(total, total)
    ranked = sorted(tested, key=lambda c: -(c.agreement or 0.0))
    kept = ranked[: cfg.keep]
    draft = None
    if kept:
        principles, exemplars = constitution.content(base)
        names = []
        for i, c in enumerate(kept):
            names.append(f"discovered-{ctx.run_id}-{i + 1}")
            principles.append({"kind": "comparison", "name": names[-1], "text": c.text, "enabled": True})
        note = f"draft from discovery run {ctx.run_id} on {cfg.prefs!r}: " + "; ".join(
            f"{n} agreement {c.agreement:.2f} [{c.lo:.2f}, {c.hi:.2f}] n={c.n}" for n, c in zip(names, kept, strict=True))
        v = constitution.new_version(db, base["name"], principles, exemplars, note, parent_id=base["id"])
        draft = f"{v['name']}@{v['version']}"
        ctx.log(f"wrote {draft}: {note}")
    return {
        "prefs": cfg.prefs, "feedback_model": cfg.feedback_model, "sample_pairs": sample_ids, "test_pairs": test_ids,
        "proposals": [{"pair_id": i, "rule": t} for i, t in proposals],
        "candidates": [asdict(c) for c in merged], "tested": [asdict(c) for c in ranked],
        "draft_version": draft, "base_version": f"{base['name']}@{base['version']}",
    }


STAGE = Stage("discover", DiscoverConfig, "Principle discovery (Inverse CAI)",
              "principle discovery: principles that explain a preference set's choices (Inverse CAI)", run)
