"""What a run pins at creation and what resume checks: changed inputs refused, the newest constitution version
and the torch thread count fixed, one liveness rule (Home, thread sizing), one winner among racing resumes."""

from __future__ import annotations

import json
import subprocess
import threading
from types import SimpleNamespace

import pytest

from cai import constitution, models, run_pins, runs, store
from cai.backends.base import ScriptedBackend
from cai.queries import overview
from cai.stages import HHHConfig, SLConfig
from tests.helpers import seed


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hhh_file(path, n: int, word: str = "good") -> str:
    path.write_text("".join(json.dumps({"prompt": f"\n\nHuman: Q{i}?\n\nAssistant:", "corrects": [f" {word} {i}"],
                                        "incorrects": [f" bad {i}"]}) + "\n" for i in range(n)))
    return str(path)


def stop(db, run_id: int) -> None:
    """The run as a killed worker leaves it: status running, a pid that is gone."""
    db["runs"].update(run_id, {"status": "running", "pid": dead_pid(), "heartbeat_at": store.now()})
    assert runs.get_run(db, run_id)["status"] == "interrupted"


def test_resume_refuses_a_changed_input_file_and_an_unchanged_one_resumes(db, tmp_path):
    data = hhh_file(tmp_path / "hhh.jsonl", 4)
    run_id = runs.create_run(db, HHHConfig(data=data, model="scripted"))
    pinned = runs.get_run(db, run_id)["pinned"]["inputs"]
    assert pinned == {"data": {"file": data, "sha256": run_pins.file_sha256(data)}}
    stop(db, run_id)
    hhh_file(tmp_path / "hhh.jsonl", 4, word="changed")
    with pytest.raises(runs.RunError) as err:
        runs.prepare_resume(db, run_id)
    assert str(err.value).startswith(f"run {run_id} cannot resume: data: the file {data} changed since the run "
                                     "was created (sha256 ")
    assert str(err.value).endswith("Its stored rows came from the old input: start a new run instead")
    assert runs.get_run(db, run_id)["status"] == "interrupted"  # nothing was touched
    hhh_file(tmp_path / "hhh.jsonl", 4)  # back as it was: the same bytes, the same hash
    runs.prepare_resume(db, run_id)
    assert runs.get_run(db, run_id)["status"] == "queued"


def test_resume_refuses_a_changed_prompt_set_and_a_worker_refuses_a_changed_file(db, tmp_path):
    seed(db, n_prompts=3)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    stop(db, run_id)
    db["prompts"].update(1, {"text": "\n\nHuman: Another question?\n\nAssistant:"})
    with pytest.raises(runs.RunError, match=r"prompts: the stored set 'red' changed since the run was created"):
        runs.prepare_resume(db, run_id)
    # A queued run whose file changes before its worker starts fails with the same line, reading nothing.
    data = hhh_file(tmp_path / "hhh.jsonl", 2)
    queued = runs.create_run(db, HHHConfig(data=data, model="scripted"))
    hhh_file(tmp_path / "hhh.jsonl", 3)
    run = runs.execute(db, queued)
    assert run["status"] == "failed" and run["error"].startswith(f"RunError: data: the file {data} changed")
    assert db["hhh_results"].count_where("run_id = ?", [queued]) == 0


def test_the_newest_constitution_version_is_pinned_at_creation(db, monkeypatch):
    seed(db, n_prompts=2)
    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=lambda p: " fine"))
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", revisions=1))  # "" = the newest
    v1 = constitution.resolve_version(db, "test")
    ps, es = constitution.content(v1)
    constitution.new_version(db, "test", ps[:1], es, note="saved while the run was loading")
    run = runs.get_run(db, run_id)
    assert (run["config"]["constitution"], run["config"]["constitution_version"]) == ("test", 1)
    run = runs.execute(db, run_id)
    assert run["status"] == "done" and run["constitution_version_id"] == v1["id"]
    assert {r[0] for r in db.execute("select constitution_version_id from chains")} == {v1["id"]}


def test_a_model_name_moved_to_another_path_is_refused_on_resume(db, tmp_path):
    seed(db, n_prompts=1)
    models.register_model(db, "mine", str(tmp_path))
    run_id = runs.create_run(db, SLConfig(prompts="red", model="mine", constitution="test"))
    assert runs.get_run(db, run_id)["pinned"]["models"] == {"model": {"name": "mine", "path": str(tmp_path)}}
    stop(db, run_id)
    db.execute("update models set path = ? where name = 'mine'", [str(tmp_path / "other")])
    with pytest.raises(runs.RunError, match=r"model: the model 'mine' pointed at .* when the run was created, now at"):
        runs.prepare_resume(db, run_id)


def test_thread_count_is_pinned_at_creation_counting_live_runs_only_and_reused(db, monkeypatch, capsys):
    import torch

    from ui import dashboard as D
    from ui.common import AppContext

    seed(db, n_prompts=1)
    monkeypatch.delenv("CAI_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    dead = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    stop(db, dead)  # a killed worker's row still says running: it must not take a share of the CPUs
    alive = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    db["runs"].update(alive, {"status": "running", "pid": subprocess.os.getpid(), "heartbeat_at": store.now()})
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    pinned = runs.get_run(db, run_id)["pinned"]
    assert (pinned["threads"], pinned["threads_why"]) == (4, "4 CPUs shared by 1 running run(s)")
    # The machine changes; the run keeps its count on every execution.
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setenv("CAI_THREADS", "1")
    monkeypatch.setitem(runs.SCRIPTED, "tiny", ScriptedBackend(respond=lambda p: " fine"))
    before = torch.get_num_threads()
    try:
        assert runs.execute(db, run_id)["status"] == "done"
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert f"run {run_id}: torch threads 4 (pinned at creation: 4 CPUs shared by 1 running run(s))" in \
        capsys.readouterr().err
    ctx = AppContext(db.execute("PRAGMA database_list").fetchone()[2])
    monkeypatch.setattr(D, "require", lambda *a, **k: "val")
    summary, _, _ = D.run_detail(ctx, run_id, SimpleNamespace(username="val"))
    assert "<span id='run-threads'>torch threads 4</span> (4 CPUs shared by 1 running run(s); fixed for every " \
           "resume)" in summary


def test_a_pipelines_stage_runs_take_its_thread_count_not_the_load_its_last_stage_left(db, monkeypatch):
    """On a 2-core machine a stage that just used both cores leaves the 1-minute load above 2: the next stage
    run, pinned then, got 1 thread at random and trained other weights. A stage run now takes the thread
    count pinned with its pipeline (and an experiment's with the experiment); CAI_THREADS still wins."""
    from cai import pipeline
    from cai.cli import main
    from cai.pipeline.runner import child

    monkeypatch.delenv("CAI_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.getloadavg", lambda: (0.3, 0.3, 0.3))
    path = db.execute("PRAGMA database_list").fetchone()[2]
    assert main(["init", "--db", path]) == 0
    pipe = pipeline.create(db, "smoke", ["sweep="])
    assert runs.get_run(db, pipe)["pinned"]["threads"] == 2
    monkeypatch.setattr("os.getloadavg", lambda: (2.4, 1.0, 0.5))  # the pipeline's own last stage
    spec = store.loads(runs.get_run(db, pipe)["config"]["spec"])
    sl_id = child(db, pipe, spec, "sl", 0, {})
    sl = runs.get_run(db, sl_id)["pinned"]
    assert (sl["threads"], sl["threads_why"]) == (2, f"run {pipe}'s (2 CPUs shared by 1 running run(s))")
    alone = runs.get_run(db, runs.create_run(db, SLConfig(prompts="sample-red-team", model="tiny")))["pinned"]
    assert (alone["threads"], alone["threads_why"]) == (1, "load 2.4 exceeds 2 CPUs")  # no parent: the machine
    monkeypatch.setenv("CAI_THREADS", "1")
    sft = runs.get_run(db, child(db, pipe, spec, "sft", 1, {"sl": sl_id}))["pinned"]
    assert (sft["threads"], sft["threads_why"]) == (1, "CAI_THREADS")


def test_home_shows_a_killed_run_as_interrupted_not_active(db):
    seed(db, n_prompts=1)
    killed = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    stop(db, killed)
    queued = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    glance = overview.overview(db)
    assert glance["runs"]["active"] == [
        {"id": queued, "kind": "sl", "status": "queued", "done": 0, "total": 0, "phase": None}]
    assert glance["runs"]["by_status"] == {"interrupted": 1, "queued": 1}
    assert [r["id"] for r in runs.live_runs(db, "running")] == []


def test_of_two_concurrent_resumes_one_wins_and_the_other_is_refused(db, monkeypatch):
    seed(db, n_prompts=1)
    run_id = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    runs.request_cancel(db, run_id)
    path = db.execute("PRAGMA database_list").fetchone()[2]
    both_read = threading.Barrier(2, timeout=30)
    real = runs.get_run

    def read_together(d, i):  # both callers see the run cancelled before either writes
        row = real(d, i)
        both_read.wait()
        return row

    monkeypatch.setattr(runs, "get_run", read_together)
    outcomes: list[str] = []

    def caller() -> None:
        conn = store.connect(path)
        try:
            runs.prepare_resume(conn, run_id)
            outcomes.append("resumed")
        except runs.RunError as exc:
            outcomes.append(str(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["resumed", f"run {run_id} is being resumed by someone else"]
    assert [g["line"] for g in runs.logs(db, run_id)].count("resumed") == 1
