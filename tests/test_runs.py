"""SL runs end to end: in-process with a scripted backend (progress, links, cancel, resume) and a real
worker process on the tiny model killed with SIGKILL mid-run, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cai import runs, sl
from cai.backends.base import ScriptedBackend
from cai.stages import SLConfig
from tests.helpers import seed


def use_backend(monkeypatch, backend) -> None:
    monkeypatch.setitem(runs.SCRIPTED, "tiny", backend)


def chains_per_prompt(db, run_id: int) -> dict[int, int]:
    rows = db.execute("select prompt_id, count(*) from chains where run_id = ? group by prompt_id", [run_id])
    return dict(rows.fetchall())


def test_sl_run_stores_linked_chains_and_progress(db, monkeypatch):
    seed(db, n_prompts=5)
    backend = ScriptedBackend(respond=lambda p: f" fine ({len(p)})")  # no step repeats the one before it
    use_backend(monkeypatch, backend)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=2, batch_size=2)
    run_id = runs.create_run(db, config, **runs.resolve_links(db, config))
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"], run["total"], run["error"]) == ("done", 5, 5, None)
    assert run["result"] == {"chains": 5, "modes": {"critique": 5}, "flagged": 0, "flags": {},
                             "steps": {"critique": 10, "initial": 5, "revision": 10}}
    # 3 chunks (2, 2, 1 prompts) x 5 steps, each step one call of at most batch_size prompts.
    assert [len(p) for _, p in backend.calls] == [2] * 10 + [1] * 5
    cv = db.execute("select id from constitution_versions").fetchone()[0]
    model = db.execute("select id from models where name = 'tiny'").fetchone()[0]
    assert (run["model_id"], run["constitution_version_id"]) == (model, cv)
    rows = list(db["chains"].rows_where("run_id = ?", [run_id], order_by="prompt_id"))
    assert {(r["model_id"], r["constitution_version_id"], r["mode"], r["n_revisions"]) for r in rows} == \
        {(model, cv, "critique", 2)}
    lines = [g["line"] for g in runs.logs(db, run_id)]
    assert lines[0] == "5 chains (0 stored), 5 to build with tiny, constitution test@1, 2 revisions"
    assert lines[1:] == ["chains 2/5", "chains 4/5", "chains 5/5"]
    chain = sl.get_chain(db, rows[0]["id"])
    assert [(s["kind"], s["round"]) for s in chain["steps"]] == \
        [("initial", 0), ("critique", 1), ("revision", 1), ("critique", 2), ("revision", 2)]
    assert (chain["model"], chain["constitution"]) == ("tiny", "test@1")


def test_helpful_prompts_give_k_samples_without_revisions(db, monkeypatch):
    seed(db, n_prompts=2, helpful=2)
    use_backend(monkeypatch, ScriptedBackend(respond=lambda p: " sure"))
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, helpful_prompts="help",
                      helpful_samples=3)
    run = runs.execute(db, runs.create_run(db, config))
    assert run["result"]["modes"] == {"critique": 2, "helpful": 6}
    rows = db.execute("select mode, sample, n_revisions from chains where mode = 'helpful' order by id").fetchall()
    assert rows == [("helpful", k, 0) for k in range(3)] * 2
    assert "helpful samples are drawn at temperature 0.7 so the k samples differ" in \
        [g["line"] for g in runs.logs(db, run["id"])]


def test_same_set_as_helpful_and_red_team_is_an_error(db, monkeypatch):
    seed(db, n_prompts=2)
    use_backend(monkeypatch, ScriptedBackend())
    config = SLConfig(prompts="red", model="tiny", constitution="test", helpful_prompts="red")
    run = runs.execute(db, runs.create_run(db, config))
    assert (run["status"], run["error"]) == \
        ("failed", "SLError: helpful_prompts: must be a different prompt set from prompts")


def test_cancel_stops_between_batches_and_resume_completes_exactly_once(db, monkeypatch):
    seed(db, n_prompts=5)
    state = {"calls": 0, "run": None}

    def respond(prompt: str) -> str:
        return f" ok ({len(prompt)})"  # a different answer per step: no step repeats the one before it

    class Cancelling(ScriptedBackend):
        def generate(self, prompts, params):
            state["calls"] += 1
            if state["calls"] == 4:  # the second chunk's initial responses
                runs.request_cancel(db, state["run"])
            return super().generate(prompts, params)

    backend = Cancelling(respond=respond)
    use_backend(monkeypatch, backend)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, batch_size=2)
    state["run"] = run_id = runs.create_run(db, config)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"]) == ("cancelled", 2)
    assert chains_per_prompt(db, run_id) == {1: 1, 2: 1}
    first_ids = [r[0] for r in db.execute("select id from chains order by id")]
    assert state["calls"] == 4  # nothing was sent after the batch during which the cancel came

    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"], run["total"]) == ("done", 5, 5)
    assert chains_per_prompt(db, run_id) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert [r[0] for r in db.execute("select id from chains order by id limit 2")] == first_ids
    assert db.execute("select count(*) from chain_steps").fetchone()[0] == 5 * 3
    assert [g["line"] for g in runs.logs(db, run_id)] == [
        "5 chains (0 stored), 5 to build with tiny, constitution test@1, 1 revisions", "chains 2/5", "cancelled",
        "resumed", "5 chains (2 stored), 3 to build with tiny, constitution test@1, 1 revisions; 2 steps of 2 "
        "unfinished chains stored",  # the initial responses made while the cancel came are kept
        "chains 4/5", "chains 5/5",
    ]


def test_cancel_of_a_queued_run_without_worker_is_immediate(db):
    seed(db, n_prompts=1)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny"))
    runs.request_cancel(db, run_id)
    assert runs.get_run(db, run_id)["status"] == "cancelled"
    with pytest.raises(runs.RunError, match="only queued or running runs can be cancelled"):
        runs.request_cancel(db, run_id)


def test_resolve_links_reports_unknown_constitution(db):
    seed(db, n_prompts=1)
    with pytest.raises(LookupError, match="no constitution named 'nope'"):
        runs.resolve_links(db, SLConfig(prompts="red", constitution="nope"))
    links = runs.resolve_links(db, SLConfig(prompts="red", model="not-a-model", constitution="test"))
    assert links["model_id"] is None and links["constitution_version_id"] == 1


@pytest.mark.timeout(180)
def test_kill_9_mid_run_then_resume_gives_exactly_one_chain_per_prompt(db, db_path):
    """A real worker on the tiny model is SIGKILLed between chain writes; the resumed run completes the set."""
    n = 24
    seed(db, n_prompts=n)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, batch_size=2,
                      max_new_tokens=12, few_shot=1)
    run_id, proc = runs.start(db, db_path, config)
    deadline = time.monotonic() + 120
    while db["chains"].count_where("run_id = ?", [run_id]) < 2:
        assert proc.poll() is None, runs.worker_log(db_path, run_id).read_text()
        assert time.monotonic() < deadline, "the worker stored no chains in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = runs.get_run(db, run_id)
    stored = db["chains"].count_where("run_id = ?", [run_id])
    assert killed["status"] == "interrupted"
    assert 2 <= stored < n, "the run finished before it could be killed; make it longer"
    # No chain lost half its steps: every stored chain has initial + critique + revision.
    assert db.execute(
        "select count(*) from chains c where run_id = ? and (select count(*) from chain_steps s "
        "where s.chain_id = c.id) != 3", [run_id]).fetchone()[0] == 0

    proc = runs.resume(db, db_path, run_id)
    run = runs.wait(db, run_id, timeout=150)
    proc.wait()
    assert (run["status"], run["done"], run["total"]) == ("done", n, n), run["error"]
    counts = chains_per_prompt(db, run_id)
    assert sorted(counts) == [r[0] for r in db.execute("select id from prompts order by id")]
    assert set(counts.values()) == {1}
    assert db.execute("select count(*) from chain_steps").fetchone()[0] == 3 * n


def test_revision_scores_score_each_response_step_and_resume(db, monkeypatch):
    from cai.evals import revisions
    from cai.stages import RevisionScoresConfig

    seed(db, n_prompts=3)
    answers = {"initial": " no", "revision": " a longer, better answer"}
    use_backend(monkeypatch, ScriptedBackend(respond=lambda p: answers["revision"] if p.endswith("Revision:")
                                             else " a critique" if p.endswith("Critique:") else answers["initial"]))
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test",
                                                           revisions=2)))
    calls = []

    def fake_score(pm, prompts, responses, db=None, batch_size=8):
        calls.append((pm, len(prompts)))
        if len(calls) == 2:
            runs.request_cancel(db, run_id)
        return [float(len(r.split())) for r in responses]

    monkeypatch.setattr(revisions, "score_fn", lambda: fake_score)
    run_id = runs.create_run(db, RevisionScoresConfig(run=sl_run["id"], pm="pm-x", batch_size=4))
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"], run["total"]) == ("cancelled", 8, 9)
    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"]) == ("done", 9)
    assert calls == [("pm-x", 4), ("pm-x", 4), ("pm-x", 1)]
    assert run["result"] == {"run": sl_run["id"], "pm": "pm-x", "steps": 9, "by_revision": [
        {"revision": 0, "mean": 1.0, "n": 3}, {"revision": 1, "mean": 4.0, "n": 3}, {"revision": 2, "mean": 4.0, "n": 3}],
        "helpful": []}
    assert db.execute("select count(*) from chain_steps where kind = 'critique' and pm_score is not null"
                      ).fetchone()[0] == 0
    # A new scoring run rescores every step.
    again = runs.execute(db, runs.create_run(db, RevisionScoresConfig(run=sl_run["id"], pm="pm-y")))
    assert again["status"] == "done" and calls[3:] == [("pm-y", 8), ("pm-y", 1)]


def test_revision_scores_figure_5_is_over_red_team_chains_only(db, monkeypatch):
    """The issue's example: one red-team chain scored -1 -> 0 and one helpful chain scored 5. Mixed, revision 0
    was 2.0 (n=2); Figure 5 is over the red-team chains, the helpful chain reported beside it."""
    from cai.evals import revisions
    from cai.stages import RevisionScoresConfig

    seed(db, n_prompts=1, helpful=1)
    use_backend(monkeypatch, ScriptedBackend(respond=lambda p: " better" if p.endswith("Revision:") else " first"))
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test",
                                                           revisions=1, helpful_prompts="help", helpful_samples=1)))
    assert sl_run["result"]["modes"] == {"critique": 1, "helpful": 1}

    def fake_score(pm, prompts, responses, db=None, batch_size=8):
        return [5.0 if "Nice" in p else 0.0 if r == " better" else -1.0 for p, r in zip(prompts, responses, strict=True)]

    monkeypatch.setattr(revisions, "score_fn", lambda: fake_score)
    run = runs.execute(db, runs.create_run(db, RevisionScoresConfig(run=sl_run["id"], pm="pm-x")))
    assert run["result"]["by_revision"] == [{"revision": 0, "mean": -1.0, "n": 1}, {"revision": 1, "mean": 0.0, "n": 1}]
    assert run["result"]["helpful"] == [{"revision": 0, "mean": 5.0, "n": 1}]
    lines = [g["line"] for g in runs.logs(db, run["id"])]
    assert "mean score by revision, red-team chains: 0: -1.0000 (n=1), 1: 0.0000 (n=1)" in lines
    assert "helpful chains (not in Figure 5): 0: 5.0000 (n=1)" in lines


def test_revision_scores_with_a_real_sequence_classifier(db, monkeypatch):
    """The RL stage's `score` on the tiny model as a (random-headed) PM: a float per response step, stored."""
    from cai.stages import RevisionScoresConfig

    seed(db, n_prompts=2)
    use_backend(monkeypatch, ScriptedBackend(respond=lambda p: " text"))
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test",
                                                           revisions=1)))
    run = runs.execute(db, runs.create_run(db, RevisionScoresConfig(run=sl_run["id"], pm="tiny")))
    assert run["status"] == "done", run["error"]
    assert [(r["revision"], r["n"]) for r in run["result"]["by_revision"]] == [(0, 2), (1, 2)]
    scores = [r[0] for r in db.execute("select pm_score from chain_steps where kind != 'critique'")]
    assert len(scores) == 4 and all(isinstance(s, float) for s in scores)


def test_direct_run_stores_revisions_without_critiques(db, monkeypatch):
    seed(db, n_prompts=2)
    use_backend(monkeypatch, ScriptedBackend(respond=lambda p: f" fine ({len(p)})"))
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=2, direct=True)
    run = runs.execute(db, runs.create_run(db, config))
    assert run["result"] == {"chains": 2, "modes": {"direct": 2}, "flagged": 0, "flags": {},
                             "steps": {"initial": 2, "revision": 4}}


def test_sl_reports_each_step_with_a_phase_and_an_eta_from_the_first_step(db, monkeypatch):
    """2 prompts x 1 round = 6 model steps in 3 backend calls (batch 2): progress moves at each call."""
    seed(db, n_prompts=2)
    seen = []

    class Watching(ScriptedBackend):
        def generate(self, prompts, params):
            row = db.execute("select done, steps_done, steps_total, phase, eta_s from runs").fetchone()
            seen.append(tuple(row))
            return super().generate(prompts, params)

    use_backend(monkeypatch, Watching(respond=lambda p: " ok"))
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, batch_size=2))
    run = runs.execute(db, run_id)
    assert run["status"] == "done"
    assert [(d, s, t, ph) for d, s, t, ph, _ in seen] == [
        (0, 0, 6, "chains 1-2 of 2: responses"), (0, 2, 6, "chains 1-2 of 2: critique 1 of 1"),
        (0, 4, 6, "chains 1-2 of 2: revision 1 of 1")]
    assert seen[0][4] is None and seen[1][4] is not None  # an ETA once the first step is done
    assert (run["steps_done"], run["steps_total"]) == (6, 6)


def test_step_eta_and_steps_per_chain():
    assert runs.step_eta(0, 10, 5.0) is None
    assert runs.step_eta(2, 10, 5.0) == 25.0
    assert [sl.steps_per_chain(sl.ChainItem(1, "p", 0, m), 4) for m in ("critique", "direct", "helpful")] == [9, 5, 1]


def test_a_run_leaves_no_cancel_hook_on_a_cached_backend(db, monkeypatch):
    """Backends are cached per process: a finished run's cancel hook must not stop later generations."""
    seed(db, n_prompts=2)
    backend = ScriptedBackend(respond=lambda p: " fine")
    backend.should_stop = None  # type: ignore[attr-defined]
    seen = []
    real_generate = backend.generate

    def generate(prompts, params):
        seen.append(callable(backend.should_stop))
        return real_generate(prompts, params)

    backend.generate = generate  # type: ignore[method-assign]
    use_backend(monkeypatch, backend)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, batch_size=2)
    assert runs.execute(db, runs.create_run(db, config))["status"] == "done"
    assert seen == [True, True, True] and backend.should_stop is None


def test_rank_snapshots_of_dead_ranks_are_swept(tmp_path):
    """A killed rank leaves `.NAME.rankR-PID` beside the database; the next snapshot deletes the ones whose pid
    is gone and keeps live ones (this process) and unrelated files."""
    real = tmp_path / "workbench.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".workbench.db.rank1-{dead.pid}"
    stale_wal = tmp_path / f".workbench.db.rank1-{dead.pid}-wal"
    live = tmp_path / f".workbench.db.rank2-{os.getpid()}"
    other = tmp_path / ".workbench.db.rank1-notapid"
    for p in (stale, stale_wal, live, other):
        p.write_text("x")
    assert runs.sweep_rank_snapshots(real) == [stale, stale_wal]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
