"""Padded scoring batches: which length-sorted prompts run together in one forward pass.

Every prompt of a batch is left-padded to the batch's longest, so a batch computes width x prompts token
slots. Cutting the sorted prompts into more batches computes fewer padding slots but pays a fixed cost per
forward pass; `plan` picks the cuts that minimise the sum (dynamic programming over contiguous runs).
Pure Python; hf.py runs the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """One prompt (as token ids) and the option tails scored on top of it: (option index, tail ids)."""

    index: int
    prompt: list[int]
    tails: list[tuple[int, list[int]]]

    @property
    def longest_tail(self) -> int:
        return max(len(t) for _, t in self.tails)

    @property
    def logit_rows(self) -> int:
        return len(self.tails) * self.longest_tail


def split_group(
    index: int, prompt: list[int], tails: list[tuple[int, list[int]]], logit_rows: int
) -> list[Group]:
    """Split a prompt's options so each part's tails fit the logit budget (one option at least)."""
    parts: list[Group] = []
    current: list[tuple[int, list[int]]] = []
    for tail in tails:
        if current and Group(index, prompt, [*current, tail]).logit_rows > logit_rows:
            parts.append(Group(index, prompt, current))
            current = []
        current.append(tail)
    if current:
        parts.append(Group(index, prompt, current))
    return parts


def plan(
    shapes: Sequence[tuple[int, int, int]], *, tokens: int, logit_rows: int, pass_slots: int
) -> list[range]:
    """Cut `shapes` (prompt length, tails, longest tail), sorted by prompt length, into contiguous batches.

    A batch costs its padded token slots (longest prompt x prompts) plus `pass_slots`, what one more
    forward pass costs in prompt tokens; the plan has the least total cost. A batch stays within `tokens`
    padded prompt slots and `logit_rows` tail positions (tails x longest tail); a prompt alone always runs.
    So no batch of the plan could be cut in two to save more than `pass_slots` slots; a huge `pass_slots`
    gives the fewest batches the budgets allow.
    """
    lengths = [s[0] for s in shapes]
    if lengths != sorted(lengths):
        raise ValueError("plan: shapes must be sorted by prompt length")
    n = len(shapes)
    best = [0] * (n + 1)  # best[i]: least cost of the prompts from i on
    end = [n] * (n + 1)  # end[i]: where the first batch of that plan ends
    for i in range(n - 1, -1, -1):
        rows = longest = 0
        best[i] = -1
        for j in range(i + 1, n + 1):  # the first batch is shapes[i:j], lengths[j - 1] wide
            rows += shapes[j - 1][1]
            longest = max(longest, shapes[j - 1][2])
            if j > i + 1 and ((j - i) * lengths[j - 1] > tokens or rows * longest > logit_rows):
                break  # a longer batch only grows: every later end breaks the budgets too
            cost = (j - i) * lengths[j - 1] + pass_slots + best[j]
            if best[i] < 0 or cost <= best[i]:  # ties: the longer first batch (as filling in order would)
                best[i], end[i] = cost, j
    batches = []
    i = 0
    while i < n:
        batches.append(range(i, end[i]))
        i = end[i]
    return batches


def batches(groups: Sequence[Group], *, tokens: int, logit_rows: int, pass_slots: int) -> list[list[Group]]:
    """`plan` over groups sorted by prompt length: the groups of each batch."""
    shapes = [(len(g.prompt), len(g.tails), g.longest_tail) for g in groups]
    return [
        [groups[k] for k in r]
        for r in plan(shapes, tokens=tokens, logit_rows=logit_rows, pass_slots=pass_slots)
    ]


def slots(lengths: Sequence[int], cuts: Sequence[range]) -> int:
    """Padded token slots a plan computes: per batch, its longest prompt x its prompts."""
    return sum(max(lengths[k] for k in r) * len(r) for r in cuts)
