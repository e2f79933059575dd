"""Seconds this process spent loading models, so that a run can record what it waited for weights (`load_s`).

The loaders wrap the work of making a model usable in `timed()`: `cai.backends.load` (a backend built, a
builtin converted on first use), `cai.train.common.causal_lm` (a model to train) and the preference-model loads
in `cai.train.reward`. A cache hit is not timed, so a stage that reuses a model loaded earlier in the same
process (a pipeline runs its stage runs in one worker) records 0. The worker reads `snapshot()` before and after
a stage (`cai.runs.execute`) and logs the difference as one line per execution (`line`; `logged` sums a run's
lines, a resumed run has one per execution). A timing is logged, not put in the run's result: a result is a
claim that the same config and seed reproduce, also after a resume. One counter per process, under a lock:
the loads of all threads count, which is what a run waits for.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_clock = time.perf_counter  # tests swap it for a scripted clock
_lock = threading.Lock()
_seconds = 0.0
_loads = 0
LINE = re.compile(r"^loading models: (\d+(?:\.\d+)?) s \((\d+) loads?\)$")


class Timing:
    """The handle `timed()` yields: `cancel()` when the block found the model already loaded (a cache hit)."""

    counted = True

    def cancel(self) -> None:
        self.counted = False


@contextmanager
def timed() -> Iterator[Timing]:
    """Count the block's wall time as model loading (also when it fails: the wait was real), unless the block
    calls `cancel()` on the handle."""
    global _seconds, _loads
    timing, start = Timing(), _clock()
    try:
        yield timing
    finally:
        spent = _clock() - start
        if timing.counted:
            with _lock:
                _seconds += spent
                _loads += 1


def snapshot() -> tuple[float, int]:
    """(seconds spent loading models so far in this process, number of loads)."""
    with _lock:
        return _seconds, _loads


def since(before: tuple[float, int]) -> tuple[float, int]:
    """(seconds, loads) since `before` (a `snapshot()`)."""
    seconds, loads = snapshot()
    return seconds - before[0], loads - before[1]


def line(seconds: float, loads: int) -> str:
    """The run-log line of one execution's model loading, e.g. "loading models: 12.3 s (2 loads)"."""
    return f"loading models: {seconds:.1f} s ({loads} load{'' if loads == 1 else 's'})"


def logged(lines: Iterable[str]) -> float:
    """Seconds a run spent loading models, summed over its log lines (`line`); 0.0 when it loaded none."""
    return round(sum(float(m.group(1)) for m in map(LINE.match, lines) if m), 1)
