"""The whole SL stage on the tiny model: chains, then SFT changes the weights and registers a model
that `cai generate` can use; plus the pure data shaping."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cai import models, runs, sl
from cai.backends import model_path
from cai.cli import main
from cai.stages import SFTStageConfig, SLConfig
from cai.train import sft
from tests.helpers import seed


def test_conversational_rows_for_chat_models():
    rows = [{"prompt": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Help?\n\nAssistant:", "completion": " Sure."}]
    assert sft.conversational(rows) == [{
        "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                   {"role": "user", "content": "Help?"}],
        "completion": [{"role": "assistant", "content": "Sure."}],
    }]


def test_sft_rejects_a_run_that_is_not_sl(db):
    seed(db, n_prompts=1)
    other = runs.create_run(db, SFTStageConfig(chains=1))
    run = runs.execute(db, runs.create_run(db, SFTStageConfig(chains=other)))
    assert run["status"] == "failed"
    assert run["error"] == f"ValueError: chains: run {other} is a 'sft' run, not an 'sl' run"


def test_sft_records_leave_out_empty_finals(db):
    run_id = int(db["runs"].insert({"kind": "sl", "status": "done", "config": "{}"}).last_pk)
    for i, final in enumerate(["Kept.", "  ", "Also kept."]):
        db["chains"].insert({"run_id": run_id, "prompt_id": i, "sample": 0, "mode": "critique",
                             "prompt": f"\n\nHuman: q{i}\n\nAssistant:", "final": final, "flags": "[]"})
    rows, skipped = sl.sft_records(db, run_id)
    assert rows == [{"prompt": "\n\nHuman: q0\n\nAssistant:", "completion": " Kept."},
                    {"prompt": "\n\nHuman: q2\n\nAssistant:", "completion": " Also kept."}]
    assert skipped == 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lora", [False, True])
def test_tiny_model_chains_then_sft_registers_a_model_that_generates(db, db_path, capsys, lora):
    seed(db, n_prompts=4, helpful=1)
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(
        prompts="red", model="tiny", constitution="test", revisions=1, batch_size=4, max_new_tokens=8,
        helpful_prompts="help", helpful_samples=2, temperature=1.0, seed=3)))
    assert sl_run["status"] == "done", sl_run["error"]
    assert sl_run["result"]["modes"] == {"critique": 4, "helpful": 2}

    config = SFTStageConfig(chains=sl_run["id"], lora=lora, lora_r=4, max_steps=2, batch_size=2,
                       learning_rate=1e-2, save_steps=1, max_length=64)
    run = runs.execute(db, runs.create_run(db, config))
    assert run["status"] == "done", run["error"]
    name = f"sft-{run['id']}"
    row = models.get_model(db, name)
    parent = models.get_model(db, "tiny")
    assert (row["parent_id"], row["run_id"], row["constitution_version_id"]) == \
        (parent["id"], run["id"], sl_run["constitution_version_id"])
    assert (row["meta"]["steps"], row["meta"]["lora"], row["meta"]["chains_run"]) == (2, lora, sl_run["id"])
    assert row["meta"]["rows"] + run["result"]["skipped_empty"] == 6

    before = load_file(f"{model_path('tiny')}/model.safetensors")
    after = load_file(f"{row['path']}/model.safetensors")
    assert sorted(before) == sorted(after)  # LoRA adapters are merged: a plain model folder
    changed = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert changed, "SFT changed no parameter"
    out_dir = db_path.parent / "workbench.runs" / str(run["id"])  # keyed by the database (folders)
    kept = sorted(p.name for p in out_dir.iterdir())
    assert "checkpoint-2" not in kept and {"final_state.json", "run.json"} <= set(kept), kept  # removed when done

    capsys.readouterr()  # the trainer's own log lines
    assert main(["generate", "--db", str(db_path), "--model", name, "--prompt", "Hello?",
                 "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "\n\nHuman: Hello?\n\nAssistant:"
    assert 1 <= out["completion_tokens"] <= 4


@pytest.mark.timeout(240)
@pytest.mark.parametrize("half_written", [False, True])
def test_cancelled_sft_resumes_from_its_last_checkpoint(db, db_path, monkeypatch, half_written):
    """With `half_written`, a worker killed while saving checkpoint-2 left its weights but not the
    trainer_state.json the Trainer writes last: resume passes over it for checkpoint-1."""
    import shutil

    from cai.train import common

    seed(db, n_prompts=4)
    sl_run = runs.execute(db, runs.create_run(db, SLConfig(
        prompts="red", model="tiny", constitution="test", revisions=1, batch_size=4, max_new_tokens=8)))
    run_id = runs.create_run(db, SFTStageConfig(chains=sl_run["id"], max_steps=3, batch_size=2, save_steps=1,
                                           max_length=64, name="resumed"))
    original = common.ProgressCallback.on_step_end

    def cancel_at_step_2(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
        resumed = any(g["line"] == "resumed" for g in runs.logs(db, run_id, tail=1000))
        if state.global_step == 2 and not resumed:
            runs.request_cancel(db, run_id)
        return original(self, args, state, control, **kw)

    monkeypatch.setattr(common.ProgressCallback, "on_step_end", cancel_at_step_2)
    run = runs.execute(db, run_id)
    assert run["status"] == "cancelled"
    assert models.get_model(db, "resumed") is None
    out_dir = db_path.parent / "workbench.runs" / str(run_id)
    if half_written:
        (out_dir / "checkpoint-2").mkdir()
        shutil.copy(out_dir / "checkpoint-1" / "model.safetensors", out_dir / "checkpoint-2")
    assert common.last_checkpoint(out_dir) == str(out_dir / "checkpoint-1")
    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert run["status"] == "done", run["error"]
    lines = [g["line"] for g in runs.logs(db, run_id, tail=1000)]
    steps = [line.split(":")[0] for line in lines if line.startswith("step ") and '"loss"' in line]
    # Step 2 was cancelled before its checkpoint: the resumed run continues from checkpoint-1.
    assert steps == ["step 1", "step 2", "step 3"]
    after = lines[lines.index("resumed"):]
    assert next(x for x in after if x.startswith("step ")).startswith("step 2:")
    assert models.get_model(db, "resumed")["meta"]["steps"] == 3
