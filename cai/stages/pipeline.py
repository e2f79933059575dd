"""Stage "pipeline": a whole recipe as one run of ordinary stage runs (cai.pipeline)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

from cai.config import ConfigError, StageConfig, _f
from cai.stages.base import Stage, engine_runner


@dataclass
class PipelineConfig(StageConfig):
    """A recipe run end to end (cai.pipeline): SL, SFT, pairs, labels, PM, RL/DPO and the evals it names."""

    kind: ClassVar[str] = "pipeline"
    recipe: str = _f("smoke", "Recipe: a YAML file, or a shipped recipe's name (smoke, cpu-small, paper).")
    sets: str = _f("", "Overrides, KEY=VALUE separated by spaces or lines (e.g. sl.revisions=2 policy=tiny).")
    spec: str = _f("", "The checked recipe with its references pinned (JSON); filled in when the pipeline is created.")
    recipe_sha256: str = _f("", "sha256 of the recipe file the pipeline was created from.")

    def validate(self) -> None:
        if self.spec:  # created: the pinned recipe is what runs, whatever the file says now
            import json

            try:
                spec = json.loads(self.spec)
            except ValueError:
                spec = None
            if not isinstance(spec, dict) or not isinstance(spec.get("stages"), dict):
                raise ConfigError("spec: not a checked recipe (leave it empty: it is filled in at creation)")
            return
        from cai.pipeline import RecipeError, apply_sets, check, load

        try:
            check(apply_sets(load(self.recipe)[0], self.set_list()))
        except RecipeError as exc:
            raise ConfigError(f"recipe: {exc}") from None

    def set_list(self) -> list[str]:
        return shlex.split(self.sets)


STAGE = Stage("pipeline", PipelineConfig, "Pipeline (a whole recipe)",
              "a whole recipe: SL, SFT, pairs, labels, PM, RL/DPO and evals as linked stage runs",
              engine_runner("cai.pipeline.runner:run"))
