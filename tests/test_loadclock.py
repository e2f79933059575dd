"""What a run records of its wait for model weights (cai.loadclock): a log line per execution, measured by the
loaders themselves (not part of the run's result); a model reused from the process's cache costs a later run
nothing."""

from __future__ import annotations

import itertools

import pytest

from cai import backends, loadclock, runs
from cai.stages import RevisionScoresConfig, SLConfig
from cai.train import reward
from tests.helpers import seed


@pytest.fixture
def clock(monkeypatch):
    """A scripted clock: each reading is 1.5 s after the one before, so one timed load takes exactly 1.5 s."""
    ticks = itertools.count(0.0, 1.5)
    monkeypatch.setattr(loadclock, "_clock", lambda: next(ticks))
    backends.clear_cache()
    reward._load_pm.cache_clear()
    yield
    backends.clear_cache()
    reward._load_pm.cache_clear()


def load_lines(db, run_id: int) -> list[str]:
    return [g["line"] for g in runs.logs(db, run_id) if g["line"].startswith("loading models")]


def test_a_run_records_its_model_loads_and_a_cached_model_costs_the_next_run_nothing(db, clock):
    seed(db, n_prompts=2)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, max_new_tokens=4)
    first = runs.execute(db, runs.create_run(db, config))
    assert first["status"] == "done", first["error"]
    assert load_lines(db, first["id"]) == ["loading models: 1.5 s (1 load)"]  # tiny, once, by cai.backends.load
    assert "load_s" not in first["result"]  # a timing is not part of what a rerun reproduces

    second = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test",
                                                           revisions=1, max_new_tokens=4, seed=1)))
    assert second["status"] == "done", second["error"]
    assert load_lines(db, second["id"]) == []

    scored = runs.execute(db, runs.create_run(db, RevisionScoresConfig(run=first["id"], pm="tiny")))
    assert scored["status"] == "done", scored["error"]
    assert load_lines(db, scored["id"]) == ["loading models: 1.5 s (1 load)"]  # the PM: a load of its own


def test_timed_counts_a_failed_load_and_not_a_cancelled_one(clock):
    before = loadclock.snapshot()
    with loadclock.timed() as hit:
        hit.cancel()
    with pytest.raises(OSError), loadclock.timed():
        raise OSError("no weights")
    assert loadclock.since(before) == (1.5, 1)


def test_logged_sums_a_runs_load_lines_over_its_executions():
    lines = ["sl: run 2", loadclock.line(12.34, 2), "resumed", loadclock.line(3.0, 1), "loading models: soon"]
    assert lines[1] == "loading models: 12.3 s (2 loads)"
    assert loadclock.logged(lines) == 15.3
    assert loadclock.logged(["nothing loaded"]) == 0.0
