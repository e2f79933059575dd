"""What a stage module gives the registry: its kind, config class, label, one-line help, CLI aliases and runner.

A stage module (cai/stages/<kind>.py) defines its `StageConfig` subclass, its `run(ctx)` and a `STAGE`
made here; cai.stages.REGISTRY lists them, and the worker, `cai run`, `cai eval`, the dashboard and the
lineage view all read that one list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cai.config import StageConfig

if TYPE_CHECKING:
    from cai.run_context import RunContext


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as every entry point sees it.

    `aliases`: extra CLI flags for a field, flag -> field name (the flag takes a value) or (field name, value)
    (the flag sets that value), e.g. {"--feedback": "feedback_model", "--one-order": ("both_orders", False)}.
    """

    kind: str
    config: type[StageConfig]
    label: str  # what a form or a list calls it
    help: str  # one line, lower case, for `cai run --help`
    run: Callable[[RunContext], Any]
    aliases: Mapping[str, str | tuple[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.kind == self.config.kind, f"stage {self.kind!r} has config kind {self.config.kind!r}"


def engine_runner(path: str) -> Callable[[RunContext], Any]:
    """A runner that stays in an engine module ("module:function"), imported only when a run starts (so the
    registry loads without torch or TRL)."""
    module, name = path.split(":")

    def run(ctx: RunContext) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(ctx)

    run.__doc__ = f"Run the stage with {path}."
    return run
