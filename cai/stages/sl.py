"""Stage "sl": SL-CAI critique -> revision chains on red-team prompts (the engine: cai.sl)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.backends.builtin import POLICY_DEFAULT
from cai.config import (
    MODELS,
    PROMPT_SETS,
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
class SLConfig(StageConfig):
    kind: ClassVar[str] = "sl"
    prompts: str = _f("", "Red-team prompt set (name) to critique and revise.", ref=PROMPT_SETS, required='name a red-team prompt set (import one with `cai prompts import`)')
    model: str = _f(POLICY_DEFAULT, "Policy model: a registered name, 'smollm2', 'gemma3-270m', 'tiny', a path or a hub id.", ref=MODELS, subject=True)
    constitution: str = constitution_field()
    constitution_version: int | None = constitution_version_field()
    revisions: int = _f(4, "Critique -> revision rounds per prompt (paper: 4).", min=0, max=8)
    direct: bool = _f(False, "Direct revision: skip the critique step (the paper's ablation).")
    few_shot: int = _f(2, "Few-shot critique/revision exemplars prepended to each request.", min=0)
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    batch_size: int = _f(8, "Prompts sent to the model at once.", min=1)
    max_new_tokens: int = _f(128, "Token limit for each response, critique and revision.", min=1)
    temperature: float = _f(0.0, "Sampling temperature; 0 = greedy.", min=0.0)
    seed: int = _f(0, "Seed for principle draws and sampling.")
    principles: str = _f("", "Draw only these critique principles (names, comma-separated); empty = every enabled one.")
    num_principles: int | None = _f(None, "Draw only from the first N critique principles (of those above, in "
                                          "constitution order); empty = all (paper: 16; its Fig. 6 varies N).", min=1)
    stratified: bool = _f(False, "Draw each principle equally often over the run (a seeded balanced schedule) "
                                 "instead of independently at random.")
    helpful_prompts: str = _f("", "Helpful prompt set whose responses join the SFT data (optional).", ref=PROMPT_SETS)
    helpful_samples: int = _f(2, "Responses per helpful prompt.", min=1)

    def validate(self) -> None:
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")


def run(ctx: RunContext) -> dict[str, Any]:
    """Build and store every planned chain not stored yet, batch by batch, with step-level progress."""
    from cai import sl
    from cai.constitution import resolve_version

    cfg, db = ctx.config, ctx.db
    assert isinstance(cfg, SLConfig)
    cv = resolve_version(db, cfg.constitution, cfg.constitution_version)
    items = sl.plan(db, cfg)
    todo = ctx.resume(items, lambda it: (it.prompt_id, it.sample), "chains", ("prompt_id", "sample"))
    partial = sl.partial_steps(db, ctx.run_id)  # steps of chains a cancel or crash cut short: continue them
    opts = sl.ChainOptions.from_config(cfg)
    helpful_opts = opts
    if cfg.helpful_prompts and cfg.helpful_samples > 1 and cfg.temperature == 0:
        helpful_opts = sl.ChainOptions.from_config(cfg, temperature=sl.HELPFUL_TEMPERATURE)
        ctx.log(f"helpful samples are drawn at temperature {sl.HELPFUL_TEMPERATURE} so the k samples differ")
    linked: list[int] = []

    def model_id() -> int:  # linked once the backend loaded, so a misspelt model fails in the loader unregistered
        if not linked:
            linked.append(ctx.link(model=cfg.model, constitution_version=cv)["id"])  # type: ignore[index]
        return linked[0]

    ctx.log(
        f"{len(items)} chains ({len(items) - len(todo)} stored), {len(todo)} to build with {cfg.model}, "
        f"constitution {cv['name']}@{cv['version']}, {cfg.revisions} revisions"
        + (f"; {sum(map(len, partial.values()))} steps of {len(partial)} unfinished chains stored" if partial else "")
    )
    exemplars = [e for e in cv["exemplars"] if e["kind"] == "critique"]

    def build(backend: Any, group: list[sl.ChainItem], first: int) -> int:
        def on_step(kind: str, rnd: int, n: int) -> None:  # before each step: say which
            ctx.set_phase(sl.step_phase(first, len(group), len(items), kind, rnd, cfg.revisions))

        chains = sl.run_chains(
            backend, group, cv["principles"], exemplars, helpful_opts if group[0].mode == "helpful" else opts,
            on_batch=lambda comps: ctx.step(len(comps), tokens=sum(c.completion_tokens for c in comps)),
            on_step=on_step, stored=partial, on_steps=lambda done: sl.store_partial(db, ctx.run_id, done),
        )
        for chain in chains:
            sl.store_chain(db, ctx.run_id, chain, model_id=model_id(), constitution_version_id=cv["id"])
        ctx.log(f"chains {first + len(chains) - 1}/{len(items)}" + sl.flag_note(chains))
        return 0  # tokens are counted per step

    ctx.work(items, model=cfg.model, todo=todo, build=build,
             batches=lambda todo: sl.chunks(todo, cfg.batch_size),
             steps=lambda it: sl.steps_per_chain(it, cfg.revisions), steps_stored=sum(map(len, partial.values())))
    model_id()
    return sl.run_summary(db, ctx.run_id)


STAGE = Stage("sl", SLConfig, "SL chains (critique → revision)",
              "SL-CAI: critique -> revision chains on red-team prompts", run)
