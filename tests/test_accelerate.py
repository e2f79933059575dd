"""Training under `accelerate launch`: two CPU processes (gloo) train the tiny model; rank 0 alone writes.

Each run really starts `accelerate launch --num_processes 2 -m cai.runs ...` (a minute on a loaded
2-core machine), so these are marked slow.
"""

from __future__ import annotations

import pytest

from cai import data, models, runs
from cai.config import ConfigError, PMConfig, SFTConfig, SLConfig
from tests.helpers import seed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _written_once(db, run_id: int) -> list[str]:
    lines = [r["line"] for r in db["run_logs"].rows_where("run_id = ?", [run_id], order_by="id")]
    assert len(lines) == len(set(lines)), lines  # two ranks writing would double every line
    return lines


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
        SFTConfig(chains=1, accelerate_config="nope.yaml")


def test_rl_vllm_generation_option():
    from cai.train.rl import vllm_args

    assert vllm_args("") == {}
    assert vllm_args("colocate") == {"use_vllm": True, "vllm_mode": "colocate"}
    assert vllm_args("http://gpu0:8000/") == {
        "use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://gpu0:8000"
    }
    with pytest.raises(ValueError, match="give 'colocate' or the URL of a `trl vllm-serve` server"):
        vllm_args("yes")


def test_sft_on_two_processes(db, db_path):
    seed(db, n_prompts=4, helpful=1)
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(
        prompts="red", model="tiny", constitution="test", revisions=1, batch_size=4, max_new_tokens=8,
        helpful_prompts="help", helpful_samples=2, temperature=1.0, seed=3)))  # fmt: skip
    assert sl_run["status"] == "done", sl_run["error"]
    config = SFTConfig(chains=sl_run["id"], max_steps=2, batch_size=2, learning_rate=1e-2, max_length=64,
                       name="sft-ddp", processes=2)  # fmt: skip
    run_id, proc = runs.start(db, db_path, config)
    proc.wait(timeout=600)
    run = runs.get_run(db, run_id)
    assert run["status"] == "done", (run["error"], runs.worker_log(db_path, run_id).read_text()[-3000:])
    assert (run["result"]["world_size"], run["result"]["steps"], run["result"]["model"]) == (2, 2, "sft-ddp")
    assert db["models"].count_where("name = ?", ["sft-ddp"]) == 1
    assert models.get_model(db, "sft-ddp")["run_id"] == run_id
    lines = _written_once(db, run_id)
    assert lines[0] == f"SFT of tiny on 6 rows of run {sl_run['id']} (full)"
    assert sum(line.startswith("registered model sft-ddp") for line in lines) == 1
    _no_snapshots_left(db_path)


def test_pm_on_two_processes(db, db_path):
    pairs = [
        {"prompt": f"\n\nHuman: Question {i}?\n\nAssistant:", "chosen": f" A kind answer {i}.",
         "rejected": f" A rude answer {i}.", "p": 0.8}
        for i in range(8)
    ]  # fmt: skip
    data.create_pref_set(db, "human-8", "human", "helpful", pairs)
    config = PMConfig(human_prefs="human-8", model="tiny", name="pm-ddp", max_steps=2, batch_size=2,
                      max_length=64, processes=2)  # fmt: skip
    run_id, proc = runs.start(db, db_path, config)
    proc.wait(timeout=600)
    run = runs.get_run(db, run_id)
    assert run["status"] == "done", (run["error"], runs.worker_log(db_path, run_id).read_text()[-3000:])
    assert run["result"]["world_size"] == 2
    assert db["models"].count_where("name = ?", ["pm-ddp"]) == 1
    _written_once(db, run_id)
    _no_snapshots_left(db_path)
