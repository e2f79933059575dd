"""Training under `accelerate launch`: two CPU processes (gloo) train the tiny model; rank 0 alone writes.

Each run really starts `accelerate launch --num_processes 2 -m cai.runs ...` (a minute on a loaded
2-core machine), so these are marked slow.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from cai import data, models, runs
from cai.cli import main
from cai.config import ConfigError
from cai.stages import PMConfig, SFTStageConfig, SLConfig
from cai.store import folders
from tests.helpers import seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _no_snapshots_left(db_path) -> None:
    assert [p.name for p in db_path.parent.glob(f".{db_path.name}.rank*")] == []


def test_worker_command_under_accelerate(tmp_path):
    db = str(tmp_path / "w.db")
    assert runs.worker_command(db, 3, {"processes": 1})[1:] == ["-m", "cai.runs", "3", "--db", db]
    cmd = runs.worker_command(db, 3, {"processes": 2})
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert cmd[-5:] == ["-m", "cai.runs", "3", "--db", db]
    conf = tmp_path / "zero3.yaml"
    conf.write_text("distributed_type: DEEPSPEED\n")
    cmd = runs.worker_command(db, 3, {"processes": 1, "accelerate_config": str(conf)})
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(conf)]
    with pytest.raises(ConfigError, match="accelerate_config: no such file: nope.yaml"):
        SFTStageConfig(chains=1, accelerate_config="nope.yaml")


def test_rl_vllm_generation_option():
    from cai.train.rl import vllm_args

    assert vllm_args("") == {}
    assert vllm_args("colocate") == {"use_vllm": True, "vllm_mode": "colocate"}
    assert vllm_args("http://gpu0:8000/") == {
        "use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://gpu0:8000"
    }
    with pytest.raises(ValueError, match="give 'colocate' or the URL of a `trl vllm-serve` server"):
        vllm_args("yes")


def _chains(db) -> dict:
    """A finished SL run on tiny: 4 chains and 2 helpfulness samples, i.e. 6 SFT rows."""
    seed(db, n_prompts=4, helpful=1)
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(
        prompts="red", model="tiny", constitution="test", revisions=1, batch_size=4, max_new_tokens=8,
        helpful_prompts="help", helpful_samples=2, temperature=1.0, seed=3)))  # fmt: skip
    assert sl_run["status"] == "done", sl_run["error"]
    return sl_run


def _human_pairs(db) -> None:
    """A human preference set "human-8" of 8 pairs (the PM holds 2 out)."""
    pairs = [
        {"prompt": f"\n\nHuman: Question {i}?\n\nAssistant:", "chosen": f" A kind answer {i}.",
         "rejected": f" A rude answer {i}.", "p": 0.8}
        for i in range(8)
    ]  # fmt: skip
    data.create_pref_set(db, "human-8", "human", "helpful", pairs)


# One accelerate launch costs about a minute here, so an uninterrupted two-process run is not a test of its own:
# the killed SFT run and the cancelled PM run below start as one (rank 0 alone logs, from the first line) and end
# as one after their resume (one model registered, by its run; every line once; no rank snapshot left).


def test_killed_two_process_sft_resumes_from_its_checkpoint(db, db_path, capsys):
    """SIGKILL to the launcher and both ranks once a checkpoint is complete, then `cai runs resume`."""
    from cai.train.common import last_checkpoint

    sl_run = _chains(db)
    config = SFTStageConfig(chains=sl_run["id"], max_steps=16, save_steps=2, batch_size=2, learning_rate=1e-2,
                       max_length=64, name="sft-killed", processes=2)  # fmt: skip
    run_id, proc = runs.start(db, db_path, config)
    out_dir = folders.run_folder(db, run_id)
    deadline = time.monotonic() + 300
    while last_checkpoint(out_dir) is None:
        assert proc.poll() is None, runs.worker_log(db_path, run_id).read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    # A crash mid-training: SIGKILL to the launcher and both ranks at once (torch's elastic agent starts
    # each rank in its own session, so killing the launcher's process group alone leaves them running).
    launcher = psutil.Process(proc.pid)
    tree = [launcher, *launcher.children(recursive=True)]
    assert sum("cai.runs" in " ".join(p.cmdline()) for p in tree[1:]) == 2
    for p in tree:
        p.kill()
    proc.wait(timeout=60)
    kept = last_checkpoint(out_dir)
    at = int(kept.rsplit("-", 1)[1])
    assert 2 <= at < 16, kept  # killed before the end: the run must not have finished
    while (run := runs.get_run(db, run_id))["status"] == "running":  # until rank 0 is gone too
        time.sleep(0.05)
    assert run["status"] == "interrupted"
    assert models.get_model(db, "sft-killed") is None
    # The killed rank 1 could not remove its snapshot; the resumed execution sweeps it (see the last assert).
    assert [p.name for p in db_path.parent.glob(f".{db_path.name}.rank1-*") if p.name.endswith(("-wal", "-shm"))]

    capsys.readouterr()
    code = main(["runs", "resume", str(run_id), "--db", str(db_path), "--json"])
    assert code == 0, runs.worker_log(db_path, run_id).read_text()[-3000:]
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    run = runs.get_run(db, run_id)
    assert run["status"] == "done", run["error"]
    result = run["result"]
    assert (result["world_size"], result["steps"], result["model"]) == (2, 16, "sft-killed")
    assert db["models"].count_where("name = ?", ["sft-killed"]) == 1
    assert models.get_model(db, "sft-killed")["meta"]["steps"] == 16
    assert models.get_model(db, "sft-killed")["run_id"] == run_id
    lines = [r["line"] for r in db["run_logs"].rows_where("run_id = ?", [run_id], order_by="id")]
    killed, resumed = lines[: lines.index("resumed")], lines[lines.index("resumed") + 1 :]
    assert killed[0] == f"SFT of tiny on 6 rows of run {sl_run['id']} (full)"
    for part in (killed, resumed):  # each execution: rank 0 alone wrote, every line once
        assert len(part) == len(set(part)), part
    assert sum(line.startswith("registered model sft-killed") for line in lines) == 1
    # The resumed execution continued from the last complete checkpoint, not from step 1.
    assert next(x for x in resumed if x.startswith("step ")).startswith(f"step {at + 1}:")
    # The resumed execution swept the killed rank's snapshot and removed its own.
    _no_snapshots_left(db_path)


def test_cancelled_two_process_pm_stops_every_rank_and_resumes(db, db_path, capsys):
    """`cai runs cancel` mid-training: both ranks stop at the same step (the flag is all-reduced), the
    launcher exits cleanly, and `cai runs resume` trains the preference model to the end once."""
    _human_pairs(db)
    config = PMConfig(human_prefs="human-8", model="tiny", name="pm-cancelled", max_steps=30, batch_size=2,
                      max_length=64, processes=2)  # fmt: skip
    run_id, proc = runs.start(db, db_path, config)
    deadline = time.monotonic() + 300
    while (runs.get_run(db, run_id)["done"] or 0) < 2:
        assert proc.poll() is None, runs.worker_log(db_path, run_id).read_text()[-3000:]
        assert time.monotonic() < deadline, "no training step after 300 s"
        time.sleep(0.02)
    assert main(["runs", "cancel", str(run_id), "--db", str(db_path)]) == 0
    assert proc.wait(timeout=120) == 0  # both ranks returned: none was left waiting in a collective
    run = runs.get_run(db, run_id)
    assert run["status"] == "cancelled", run["error"]
    assert 2 <= run["done"] < 30
    assert models.get_model(db, "pm-cancelled") is None
    _no_snapshots_left(db_path)

    capsys.readouterr()
    code = main(["runs", "resume", str(run_id), "--db", str(db_path), "--json"])
    assert code == 0, runs.worker_log(db_path, run_id).read_text()[-3000:]
    run = json.loads(capsys.readouterr().out)
    assert (run["status"], run["result"]["world_size"], run["result"]["model"]) == ("done", 2, "pm-cancelled")
    assert db["models"].count_where("name = ?", ["pm-cancelled"]) == 1
    assert models.get_model(db, "pm-cancelled")["meta"]["steps"] == 30
    lines = [r["line"] for r in db["run_logs"].rows_where("run_id = ?", [run_id], order_by="id")]
    first, resumed = lines[: lines.index("resumed")], lines[lines.index("resumed") + 1 :]
    assert first[-1] == "cancelled"
    for part in (first, resumed):
        assert len(part) == len(set(part)), part
    _no_snapshots_left(db_path)
