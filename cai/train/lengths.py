"""Rows longer than `max_length`: cut where the signal survives, and count every row that was cut or left out.

TRL's trainers filter such rows silently (RewardTrainer drops a pair longer than max_length, DPOTrainer one
whose prompt fills it, SFTTrainer one left with no completion token). Our trainers instead tokenize with
TRL (max_length lifted for that step) and cut each sequence from the left, keeping a leading BOS: the end of
a conversation, where the responses (and for preference pairs the difference between them) are, survives.
`Lengths` is what a run stores and shows: rows given, trained, truncated, completions cut, dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any


def keep_end(n: int, max_length: int, keep_first: bool) -> slice | list[int]:
    """The positions of an n-token sequence that survive a cut to `max_length` from the left: the last ones,
    plus position 0 when `keep_first` (a BOS the model expects at the start)."""
    if n <= max_length:
        return slice(None)
    if keep_first and max_length > 1:
        return [0, *range(n - (max_length - 1), n)]
    return slice(n - max_length, None)


def take(seq: list[Any], kept: slice | list[int]) -> list[Any]:
    return seq[kept] if isinstance(kept, slice) else [seq[i] for i in kept]


def cut(ids: list[int], max_length: int, bos_id: int | None) -> list[int]:
    """`ids` cut to `max_length` from the left, keeping a leading BOS."""
    return take(ids, keep_end(len(ids), max_length, bos_id is not None and bool(ids) and ids[0] == bos_id))


@contextlib.contextmanager
def tokenize_whole(args: Any) -> Iterator[None]:
    """TRL's dataset preparation without its max_length step (so nothing is filtered); restored after."""
    max_length = args.max_length
    args.max_length = None
    try:
        yield
    finally:
        args.max_length = max_length


@dataclass
class Lengths:
    """What became of a stage's rows: `given` to the trainer, `trained` (= given - dropped), `truncated` (start
    of the conversation cut), `completion_cut` (part of a trained response cut too), at `max_length`."""

    unit: str
    given: int
    trained: int
    truncated: int
    completion_cut: int
    max_length: int

    @property
    def dropped(self) -> int:
        return self.given - self.trained

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dropped": self.dropped}


def summary(data: dict[str, Any]) -> str:
    """One line for the log and the run page, from a stored `Lengths.as_dict()`."""
    unit = data["unit"]
    line = f"{data['trained']} of {data['given']} {unit} trained"
    if data.get("dropped"):
        line += (
            f", {data['dropped']} left out (no tokens to learn from within max_length {data['max_length']})"
        )
    if not data["truncated"]:
        return line + f"; none longer than max_length {data['max_length']}"
    line += (
        f"; {data['truncated']} cut to max_length {data['max_length']} (start of the conversation left out)"
    )
    if data.get("completion_cut"):
        line += f", {data['completion_cut']} of them with part of a response cut too"
    return line


def refuse_empty(data: Lengths) -> None:
    """A clear refusal when no row is left to train on."""
    if data.trained == 0:
        raise ValueError(
            f"no {data.unit} left to train on: all {data.given} are longer than max_length {data.max_length}"
            " allows; raise max_length"
        )
