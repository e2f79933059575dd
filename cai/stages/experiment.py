"""Stage "experiment": constitution versions through the same stages, paired (cai.experiments)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cai.backends.builtin import POLICY_DEFAULT
from cai.config import MODELS, PREFS, PROMPT_SETS, ConfigError, StageConfig, _f
from cai.stages.base import Stage, engine_runner

if TYPE_CHECKING:
    pass

EXPERIMENT_STAGES = ("sl", "scores", "sft", "label", "agreement")

_SPEC = re.compile(r"^(?P<name>[^@\s,]+)@(?P<version>\d+)$")


def parse_versions(text: str) -> list[tuple[str, int]]:
    """"a@1 a@2" or "a@1,b@3" -> [(name, version), ...]; a clear error for anything else or a repeat."""
    out = []
    for spec in (s for s in re.split(r"[\s,]+", text.strip()) if s):
        m = _SPEC.match(spec)
        if not m:
            raise ValueError(f"versions: {spec!r} is not NAME@N (e.g. default@1)")
        out.append((m["name"], int(m["version"])))
    if len(set(out)) != len(out):
        raise ValueError("versions: a version is named twice")
    return out


@dataclass
class ExperimentConfig(StageConfig):
    """Two or more constitution versions through the same stages, on paired prompts and seeds (cai.experiments)."""

    kind: ClassVar[str] = "experiment"
    versions: str = _f("", "Constitution versions to compare, NAME@N separated by spaces or commas; the first is the baseline.")
    prompts: str = _f("", "Red-team prompt set, the same for every version.", ref=PROMPT_SETS)
    model: str = _f(POLICY_DEFAULT, "Policy model of the SL chains.", ref=MODELS, subject=True)
    stages: str = _f("sl", "Comma-separated stages: sl, scores (PM score per revision), sft, label, agreement.")
    seed: int = _f(0, "Seed of every run (principle draws and sampling): the same for every version.")
    limit: int | None = _f(None, "Use only the first N prompts.", min=1)
    revisions: int = _f(4, "Critique -> revision rounds per prompt.", min=0, max=8)
    few_shot: int = _f(2, "Few-shot critique/revision exemplars.", min=0)
    batch_size: int = _f(8, "Prompts (or pairs) sent to a model at once.", min=1)
    max_new_tokens: int = _f(128, "Token limit for each response, critique and revision.", min=1)
    temperature: float = _f(0.0, "Sampling temperature of the chains; 0 = greedy.", min=0.0)
    principles: str = _f("", "SL chains draw only these critique principles (names, comma-separated; e.g. the "
                             "edited ones); empty = every enabled one.")
    stratified: bool = _f(False, "SL chains draw each principle equally often (a seeded balanced schedule) "
                                 "instead of independently at random.")
    pm: str = _f("", "Preference model that scores the revisions (stage scores).", ref=MODELS)
    sft_max_steps: int = _f(-1, "SFT steps per version (-1 = one epoch) (stage sft).")
    sft_lora: bool = _f(False, "SFT with LoRA adapters (stage sft).")
    pairs: int | None = _f(None, "Pairs run whose response pairs each version labels (stage label).", min=1, ref="runs:pairs")
    prefs: str = _f("", "Human preference set for label agreement (stage agreement).", ref=PREFS)
    pair_limit: int | None = _f(None, "Use only the first N human pairs (stage agreement).", min=1)
    feedback_model: str = _f("", "Feedback model of the label and agreement stages; empty = model.", ref=MODELS, subject=True)
    n_boot: int = _f(1000, "Bootstrap resamples for each delta's confidence interval.", min=100)
    confidence: float = _f(0.95, "Confidence level of the intervals.", min=0.5, max=0.999)

    def validate(self) -> None:
        if len(parse_versions(self.versions)) < 2:
            raise ConfigError("versions: name at least two constitution versions, e.g. default@1 default@2")
        if not self.prompts:
            raise ConfigError("prompts: name a red-team prompt set")
        stages = self.stage_list()
        unknown = [s for s in stages if s not in EXPERIMENT_STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown {', '.join(unknown)} (known: {', '.join(EXPERIMENT_STAGES)})")
        if any(s in stages for s in ("scores", "sft")) and "sl" not in stages:
            raise ConfigError("stages: scores and sft need sl")
        for stage, value, what in (("scores", self.pm, "pm"), ("label", self.pairs, "pairs"),
                                   ("agreement", self.prefs, "prefs")):
            if stage in stages and not value:
                raise ConfigError(f"{what}: stage {stage} needs it")

    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.replace(" ", ",").split(",") if s.strip()]


STAGE = Stage("experiment", ExperimentConfig, "Constitution experiment (paired versions)",
              "a constitution experiment: the same stages under several versions, paired",
              engine_runner("cai.experiments:run"))
