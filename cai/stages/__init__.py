"""Every pipeline stage, one module each; REGISTRY is the one list that the worker (cai.runs), `cai run`,
`cai eval`, the dashboard's forms and labels, and the lineage view read.

A stage module (cai/stages/<kind>.py) holds its config dataclass (field metadata: help, limits, `ref`,
`required`, `subject`), its label and one-line help, and `run(ctx)`; its `STAGE` bundles them (see base.py).
Adding a stage means adding its module and one line below. The modules import their engines (cai.sl,
cai.feedback, cai.evals.*, cai.train.*) inside `run`, so the registry loads without torch.
"""

from __future__ import annotations

from cai.stages import (
    agreement,
    compare,
    discover,
    dpo,
    experiment,
    hhh,
    label,
    pairs,
    pipeline,
    pm,
    revision_scores,
    rl,
    sft,
    sl,
    temperature,
)
from cai.stages.agreement import AgreementConfig
from cai.stages.base import Stage
from cai.stages.compare import CompareConfig
from cai.stages.discover import DiscoverConfig
from cai.stages.dpo import DPOStageConfig
from cai.stages.experiment import EXPERIMENT_STAGES, ExperimentConfig
from cai.stages.hhh import HHHConfig
from cai.stages.label import LabelConfig
from cai.stages.pairs import PairsConfig
from cai.stages.pipeline import PipelineConfig
from cai.stages.pm import PMConfig
from cai.stages.revision_scores import RevisionScoresConfig
from cai.stages.rl import RLConfig
from cai.stages.sft import SFTStageConfig
from cai.stages.sl import SLConfig
from cai.stages.temperature import TemperatureConfig

REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage to the registry (the order is the order of forms and `cai run` subcommands)."""
    REGISTRY[stage.kind] = stage
    return stage


register(sl.STAGE)
register(sft.STAGE)
register(pairs.STAGE)
register(label.STAGE)
register(pm.STAGE)
register(rl.STAGE)
register(dpo.STAGE)
register(hhh.STAGE)
register(agreement.STAGE)
register(revision_scores.STAGE)
register(temperature.STAGE)
register(compare.STAGE)
register(experiment.STAGE)
register(discover.STAGE)
register(pipeline.STAGE)

__all__ = [
    "EXPERIMENT_STAGES",
    "REGISTRY",
    "AgreementConfig",
    "CompareConfig",
    "DPOStageConfig",
    "DiscoverConfig",
    "ExperimentConfig",
    "HHHConfig",
    "LabelConfig",
    "PMConfig",
    "PairsConfig",
    "PipelineConfig",
    "RLConfig",
    "RevisionScoresConfig",
    "SFTStageConfig",
    "SLConfig",
    "Stage",
    "TemperatureConfig",
    "register",
]
