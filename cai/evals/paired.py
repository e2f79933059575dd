"""Paired differences with a percentile bootstrap interval: did a change move a per-item measure beyond noise?

Used by constitution experiments (each version against the baseline, per prompt), principle discovery (a
principle's credit against zero) and the pipeline report (first vs last revision)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Delta:
    """Mean paired difference (version - baseline) with its bootstrap interval over the paired items."""

    delta: float | None
    lo: float | None
    hi: float | None
    n: int

    @property
    def within_noise(self) -> bool | None:
        return None if self.lo is None or self.hi is None else self.lo <= 0.0 <= self.hi


def paired_bootstrap(
    baseline: Sequence[float], other: Sequence[float], *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Delta:
    """Percentile bootstrap CI of mean(other - baseline), resampling the paired items with replacement."""
    if len(baseline) != len(other):
        raise ValueError(f"paired samples differ in length: {len(baseline)} vs {len(other)}")
    n = len(baseline)
    if n == 0:
        return Delta(None, None, None, 0)
    diffs = np.asarray(other, dtype=float) - np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Delta(round(float(diffs.mean()), 6), round(float(lo), 6), round(float(hi), 6), n)
