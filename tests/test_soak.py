"""CI-sized soak and crash campaigns (bench/soak.py at full size): raters voting at once over HTTP, real run
workers killed with SIGKILL and resumed, and the web app killed while its run goes on. Exact counts."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import soak  # noqa: E402

SEED = 20261129  # the kill points' seed: `python bench/soak.py --seed 20261129 ...` replays them


def test_kill_points_are_replayable_from_their_seed():
    assert soak.kill_points(SEED, 3, 12) == soak.kill_points(SEED, 3, 12)
    points = soak.kill_points(SEED, 5, 12, max_delay=0.5)
    assert [t for t, _ in points] == sorted(t for t, _ in points) and all(0 <= t < 6 for t, _ in points)
    assert all(0.0 <= d <= 0.5 for _, d in points)
    assert soak.kill_points(SEED, 5, 12) != soak.kill_points(SEED + 1, 5, 12)


def test_raters_voting_at_once_have_every_acknowledged_vote_stored_once(tmp_path):
    got = soak.vote_soak(tmp_path / "votes.db", raters=10, votes=4, turns=2)
    figures = {k: got[k] for k in ("expected", "acknowledged", "stored", "stored_once", "lost", "duplicated",
                                   "stored_unacknowledged", "misplaced", "refused", "errors")}
    assert figures == {"expected": 40, "acknowledged": 40, "stored": 40, "stored_once": 40, "lost": 0,
                       "duplicated": 0, "stored_unacknowledged": 0, "misplaced": 0, "refused": 0, "errors": 0}, got


def test_workers_killed_then_resumed_lose_and_duplicate_nothing(tmp_path):
    """One SIGKILL of a real worker in an SL run and one in a label run (tiny model), each then resumed."""
    print(f"kill-point seed {SEED}")
    got = soak.crash_campaign(tmp_path / "crash.db", SEED, sl_kills=1, label_kills=1, prompts=12, max_delay=0.0)
    summary = {k: got[k] for k in ("kills_planned", "kills_landed", "interrupted_after_kill", "items", "lost",
                                   "duplicated", "incomplete_chains")}
    assert summary == {"kills_planned": 2, "kills_landed": 2, "interrupted_after_kill": 2, "items": 24, "lost": 0,
                       "duplicated": 0, "incomplete_chains": 0}, got
    assert (got["sl"]["status"], got["sl"]["stored"]) == ("done", 12), got["sl"]
    assert (got["label"]["status"], got["label"]["stored"]) == ("done", 12), got["label"]
    assert (got["label"]["pref_sets"], got["label"]["pref_set_bad_rows"]) == (1, 0), got["label"]


def test_killing_the_web_app_leaves_its_run_going_to_the_end(tmp_path):
    got = soak.app_kill(tmp_path / "workbench.db", prompts=6)
    assert got["worker_pid"] != got["app_pid"]
    assert (got["status_after_kill"], got["status"], got["error"]) == ("running", "done", None), got
    assert 1 <= got["stored_at_kill"]
    figures = {k: got[k] for k in ("planned", "stored", "lost", "duplicated", "incomplete_chains")}
    assert figures == {"planned": 6, "stored": 6, "lost": 0, "duplicated": 0, "incomplete_chains": 0}, got


def test_the_checks_see_a_lost_chain_and_a_chain_missing_a_step(db, monkeypatch):
    """The campaign's figures come from these checks, so they must catch what they count."""
    from cai import runs
    from cai.backends.base import ScriptedBackend
    from cai.stages import SLConfig

    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend())
    soak.seed_inputs(db, 4)
    run = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="soak", revisions=2)))
    assert soak.sl_check(db, run["id"], 2) == {"planned": 4, "stored": 4, "lost": 0, "duplicated": 0,
                                               "incomplete_chains": 0}
    first, second = [r[0] for r in db.execute("select id from chains order by id limit 2")]
    db.execute("delete from chain_steps where chain_id = ? and idx = 3", [first])
    db.execute("delete from chain_steps where chain_id = ?", [second])
    db.execute("delete from chains where id = ?", [second])
    db.conn.commit()
    assert soak.sl_check(db, run["id"], 2) == {"planned": 4, "stored": 3, "lost": 1, "duplicated": 0,
                                               "incomplete_chains": 1}
