"""Training runs killed and resumed on the tiny model: at the final save, after registration, with a
checkpoint cut mid-write; their checkpoints removed when done; and two databases in one folder, each
with its own run and model folders (cai.train.common, cai.store.folders).

The uninterrupted reference runs are trained once per module (`trained`); each kill or cut test works on
a copy of that database folder, so it pays only for its own interrupted run and its resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cai import data, models, runs, store
from cai.cli import main
from cai.stages import DPOStageConfig, PMConfig, RLConfig, SFTStageConfig
from cai.store import folders
from cai.train import common

PAIRS = [
    {"prompt": f"\n\nHuman: Question {i}?\n\nAssistant:", "chosen": f"A kind answer {i}.",
     "rejected": f"A rude reply {i}!", "p": p}
    for i, p in enumerate([0.9, 0.8, 0.7, 1.0, 0.6, 0.95, 0.85, 0.75])
]  # fmt: skip  (8 pairs: 4 steps of 2 per epoch, so a 3-step run stops mid-epoch)

# A worker that SIGKILLs itself at one point of `common.finish`: on entering `save_model` (the last
# checkpoint is written, the model is neither saved nor registered) or right after `register`.
KILLER = """
import os, signal, sys
from cai.train import common
point = sys.argv[3]
original = getattr(common, point)
def die(*args, **kwargs):
    if point == "register":
        original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(common, point, die)
from cai.runs import main
sys.exit(main([sys.argv[1], "--db", sys.argv[2]]))
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("CAI_THREADS", "1")  # same thread count in and out of process: same weights


def seed(db, name: str = "ai", pairs: list[dict] = PAIRS) -> int:
    """An AI preference set and an SL run with four chains (what PM, DPO and SFT train on)."""
    data.create_pref_set(db, name, "ai", "harmless", pairs)
    sl_id = int(db["runs"].insert({"kind": "sl", "status": "done", "config": json.dumps({"model": "tiny"})}).last_pk)
    for i in range(4):
        db["chains"].insert({"run_id": sl_id, "prompt_id": i, "sample": 0, "mode": "critique", "flags": "[]",
                             "prompt": f"\n\nHuman: q{i}?\n\nAssistant:", "final": f"A careful answer {i}."})
    return sl_id


def config(kind: str, sl_id: int, name: str, **extra):
    if kind == "pm":
        return PMConfig(ai_prefs="ai", model="tiny", name=name, max_steps=3, batch_size=2, max_length=128,
                        learning_rate=1e-3, **extra)
    if kind == "rl":
        return RLConfig(policy="tiny", reward_model="pm-r", prompts="red", name=name, max_steps=3, batch_size=1,
                        num_generations=2, max_new_tokens=6, learning_rate=1e-3, **extra)
    if kind == "sft":
        return SFTStageConfig(chains=sl_id, model="tiny", name=name, max_steps=3, batch_size=2, save_steps=1,
                              max_length=64, learning_rate=1e-2, **extra)
    return DPOStageConfig(policy="tiny", prefs="ai", name=name, max_steps=3, batch_size=2, max_length=128,
                          learning_rate=1e-3, **extra)


def execute(db, cfg) -> dict:
    run = runs.execute(db, runs.create_run(db, cfg))
    assert run["status"] == "done", run["error"]
    return run


# The reference run of each trainer in `trained`: PM's is RL's reward model "pm-r" (the same config).
REF = {"pm": "pm-r", "sft": "ref-sft", "dpo": "ref-dpo", "rl": "ref-rl"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A database folder (workbench.db and its run and model folders) trained once for the module: `seed`,
    the red-team prompts RL samples, each trainer's uninterrupted 3-step run (`REF`), and an SFT run "cut"
    that kept its checkpoints. Tests take a `copy_of` it: the same database, the references not trained again."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAI_THREADS", "1")  # as `one_thread` (function-scoped, so not yet set here)
        db = store.connect(folder / "workbench.db")
        sl_id = seed(db)
        data.create_prompt_set(db, "red", "red-team", [p["prompt"] for p in PAIRS[:4]])
        for kind in ("pm", "sft", "dpo", "rl"):  # pm first: it is RL's reward model
            execute(db, config(kind, sl_id, REF[kind]))
        execute(db, config("sft", sl_id, "cut", keep_checkpoints=True))
        db.close()
    return folder


def copy_of(trained: Path, tmp_path: Path) -> Path:
    """A copy of the `trained` folder; returns its database path. The copied model rows still point at the
    references' folders in `trained` (read only); what the test's runs write goes under the copy."""
    shutil.copytree(trained, tmp_path / "wb")
    return tmp_path / "wb" / "workbench.db"


def reference(db, kind: str) -> dict:
    return runs.get_run(db, models.get_model(db, REF[kind])["run_id"])


def weights(db, name: str) -> bytes:
    return (Path(models.get_model(db, name)["path"]) / "model.safetensors").read_bytes()


def kill_at(db_path: Path, run_id: int, point: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(run_id), str(db_path), point], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]


def steps_logged(db, run_id: int) -> list[int]:
    lines = [r["line"] for r in runs.logs(db, run_id, tail=1000)]
    return [int(x.split(":")[0].split()[1]) for x in lines if x.startswith("step ") and '"loss"' in x]


# Killed after `register`: PM and RL return the registered model through their own branch, SFT and DPO
# through the same `common.finish` -> `trained_before` (DPO's param covers both; SFT's resume from its last
# checkpoint is covered by its `save_model` param and the cut tests).
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind, point", [("pm", "save_model"), ("pm", "register"), ("sft", "save_model"),
                                         ("dpo", "save_model"), ("dpo", "register"), ("rl", "save_model"),
                                         ("rl", "register")])  # fmt: skip
def test_kill_9_at_the_final_save_resumes_to_an_uninterrupted_runs_weights_and_result(trained, tmp_path, kind, point):
    """Killed after the final checkpoint (`save_model`: nothing saved or registered yet) or just after
    the model was registered: the resumed run trains nothing more, and its weights (byte for byte),
    step count and result equal an uninterrupted run's (RL: one Goodhart row per step, none added)."""
    db_path = copy_of(trained, tmp_path)
    db = store.connect(db_path)
    ref = reference(db, kind)
    assert models.get_model(db, REF[kind])["meta"]["steps"] == 3

    run_id = runs.create_run(db, config(kind, 1, "killed"))
    kill_at(db_path, run_id, point)
    assert runs.get_run(db, run_id)["status"] == "interrupted"
    assert (models.get_model(db, "killed") is None) == (point == "save_model")
    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert run["status"] == "done", run["error"]

    assert weights(db, "killed") == weights(db, REF[kind])
    assert models.get_model(db, "killed")["meta"]["steps"] == 3
    assert steps_logged(db, run_id) == [1, 2, 3]  # no step trained after the resume
    same = {k: v for k, v in run["result"].items() if k not in ("model", "model_id", "path")}
    assert same == {k: v for k, v in ref["result"].items() if k not in ("model", "model_id", "path")}
    assert run["result"]["path"] == models.get_model(db, "killed")["path"]
    assert Path(run["result"]["path"]) == (db_path.parent / "workbench.models" / "killed").resolve()  # the copy's
    assert db["models"].count_where("name = ?", ["killed"]) == 1
    assert not list(folders.run_folder(db, run_id).glob("checkpoint-*"))  # removed once registered
    if kind == "rl":
        goodhart = [r["step"] for r in db["goodhart"].rows_where("run_id = ?", [run_id], order_by="step")]
        assert goodhart == [r["step"] for r in db["goodhart"].rows_where("run_id = ?", [ref["id"]], order_by="step")]


@pytest.mark.timeout(300)
def test_checkpoints_are_removed_when_done_unless_kept_and_db_check_reports_the_disk(db, db_path, capsys):
    sl_id = seed(db)
    gone = execute(db, config("sft", sl_id, "gone"))
    kept = execute(db, config("sft", sl_id, "kept", keep_checkpoints=True))
    gone_dir, kept_dir = folders.run_folder(db, gone["id"]), folders.run_folder(db, kept["id"])
    assert gone_dir == db_path.parent / "workbench.runs" / str(gone["id"])
    assert not list(gone_dir.glob("checkpoint-*"))
    assert sorted(p.name for p in kept_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert any("removed 2 checkpoints" in g["line"] for g in runs.logs(db, gone["id"], tail=100))

    capsys.readouterr()
    assert main(["db", "check", "--db", str(db_path), "--json"]) == 0
    disk = json.loads(capsys.readouterr().out)["disk"]
    ckpt = sum(folders.size(p) for p in kept_dir.glob("checkpoint-*"))
    model_bytes = sum(folders.size(Path(models.get_model(db, n)["path"])) for n in ("gone", "kept"))
    assert disk == {
        "runs_folder": str(db_path.parent / "workbench.runs"),
        "run_folders": 2,
        "run_bytes": folders.size(gone_dir) + folders.size(kept_dir),
        "checkpoint_bytes": ckpt,
        "runs_with_checkpoints": [kept["id"]],
        "models_folder": str(db_path.parent / "workbench.models"),
        "model_folders": 2,
        "model_bytes": model_bytes,
    }
    assert ckpt > 0 and model_bytes > 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cut", ["empty", "weights"])
def test_a_checkpoint_cut_mid_write_is_passed_over_for_the_one_before(trained, tmp_path, cut):
    """checkpoint-3 cut while being written (a 0-byte trainer_state.json, or weights cut short): the
    run resumes from checkpoint-2, says which it passed over, and ends with the uninterrupted weights."""
    db = store.connect(copy_of(trained, tmp_path))
    run_id = models.get_model(db, "cut")["run_id"]  # done, its checkpoints kept
    # Undo the registration and cut the final checkpoint as a kill mid-save would have left it.
    db["models"].delete_where("name = ?", ["cut"])
    db["runs"].update(run_id, {"status": "failed"})
    out = folders.run_folder(db, run_id)
    (out / common.FINAL_STATE).unlink()
    if cut == "empty":
        (out / "checkpoint-3" / "trainer_state.json").write_bytes(b"")
    else:
        blob = out / "checkpoint-3" / "model.safetensors"
        blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    assert common.last_checkpoint(out) == str(out / "checkpoint-2")

    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert run["status"] == "done", run["error"]
    lines = [g["line"] for g in runs.logs(db, run_id, tail=1000)]
    after = lines[lines.index("resumed"):]
    why = "trainer_state.json is cut short or unreadable" if cut == "empty" else "model.safetensors is cut short"
    assert f"passed over checkpoint-3: {why}" in after
    assert [x.split(":")[0] for x in after if x.startswith("step ") and '"loss"' in x] == ["step 3"]
    assert weights(db, "cut") == weights(db, REF["sft"])
    assert run["result"]["steps"] == 3


def test_an_error_loading_a_checkpoint_names_it(db, db_path):
    sl_id = seed(db)
    run_id = runs.create_run(db, config("sft", sl_id, "broken"))
    out = common.claim_run_dir(db, run_id)
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"global_step": 1, "max_steps": 3}))
    run = runs.execute(db, run_id)
    assert run["status"] == "failed"
    assert run["error"].startswith(f"ValueError: resuming from {out / 'checkpoint-1'}: ")


@pytest.mark.timeout(600)
def test_two_databases_in_one_folder_each_train_their_own_pm_from_step_1(tmp_path):
    """exp/a.db and exp/b.db: both first PM runs are run 2 named pm-2. Each trains from step 1 on its own
    pairs (a: 8 pairs, 4 steps; b: 2 pairs, 1 step) in its own run folder, and both models stay on disk."""
    exp = tmp_path / "exp"
    a, b = store.connect(exp / "a.db"), store.connect(exp / "b.db")
    seed(a)
    seed(b, pairs=PAIRS[:2])
    for db in (a, b):
        run_id = runs.create_run(db, PMConfig(ai_prefs="ai", model="tiny", epochs=1, batch_size=2,
                                              learning_rate=1e-3, keep_checkpoints=True))
        assert run_id == 2  # run 1 is the SL run of `seed`
        run = runs.execute(db, run_id)
        assert run["status"] == "done", run["error"]
    ra, rb = runs.get_run(a, 2)["result"], runs.get_run(b, 2)["result"]
    assert (ra["train_pairs"], rb["train_pairs"]) == (8, 2)
    assert steps_logged(a, 2) == [1, 2, 3, 4] and steps_logged(b, 2) == [1]
    assert models.get_model(a, "pm-2")["meta"]["steps"] == 4 and models.get_model(b, "pm-2")["meta"]["steps"] == 1
    pa, pb = Path(models.get_model(a, "pm-2")["path"]), Path(models.get_model(b, "pm-2")["path"])
    assert (pa, pb) == (exp / "a.models" / "pm-2", exp / "b.models" / "pm-2")
    assert (pa / "model.safetensors").read_bytes() != (pb / "model.safetensors").read_bytes()
    assert sorted(p.name for p in (exp / "a.runs" / "2").glob("checkpoint-*")) == ["checkpoint-4"]
    assert sorted(p.name for p in (exp / "b.runs" / "2").glob("checkpoint-*")) == ["checkpoint-1"]


def test_resume_refuses_checkpoints_another_database_or_config_wrote(tmp_path):
    exp = tmp_path / "exp"
    a, b = store.connect(exp / "a.db"), store.connect(exp / "b.db")
    for db in (a, b):
        seed(db)
        runs.create_run(db, config("pm", 1, "pm-x"))
    theirs = common.claim_run_dir(a, 2)
    (theirs / "checkpoint-3").mkdir()
    (exp / "b.runs").mkdir()
    shutil.copytree(theirs, exp / "b.runs" / "2")  # a's folder where b looks (a renamed or copied file)
    run = runs.execute(b, 2)
    assert run["status"] == "failed"
    assert run["error"] == (
        f"ValueError: {exp / 'b.runs' / '2'}: its checkpoints (checkpoint-3) were written by another database, "
        "not by run 2 of this database; refusing to resume from them (move the folder away to train afresh)")
    # The same database, the run's config changed since its checkpoints were written.
    a["runs"].update(2, {"config": json.dumps({**runs.get_run(a, 2)["config"], "learning_rate": 0.5})})
    run = runs.execute(a, 2)
    assert run["status"] == "failed" and "written by another config of this run" in run["error"]


def test_a_model_folder_another_database_saved_is_never_overwritten(tmp_path):
    exp = tmp_path / "exp"
    a, b = store.connect(exp / "a.db"), store.connect(exp / "b.db")
    seed(b)
    folder = exp / "b.models" / "pm-2"
    folder.mkdir(parents=True)
    (folder / common.MODEL_STAMP).write_text(json.dumps(common.stamp_of_model(a, 2)))
    (folder / "model.safetensors").write_bytes(b"a's weights")
    run = runs.execute(b, runs.create_run(b, config("pm", 1, "pm-2")))
    assert run["status"] == "failed"
    assert run["error"] == (f"ValueError: model folder {folder} already holds another model (not saved by run 2 "
                            "of this database); choose another name")
    assert (folder / "model.safetensors").read_bytes() == b"a's weights"


def test_a_database_from_before_keeps_its_run_folders(db, db_path):
    """Runs created before the layout keep `runs/<id>` beside the database; later ones get their own."""
    old = db_path.parent / "old.db"
    shutil.copy(db_path, old)
    raw = store.connect(old)
    raw["runs"].insert({"kind": "sl", "status": "done", "config": "{}"})
    raw.execute("drop table workbench")
    raw.execute("delete from _sqlite_migrations where name = 'm018_database_folders'")
    raw.conn.commit()
    raw.close()
    again = store.connect(old)
    assert folders.identity(again)["legacy_runs_upto"] == "1"
    assert folders.run_folder(again, 1) == db_path.parent / "runs" / "1"
    assert folders.run_folder(again, 2) == db_path.parent / "old.runs" / "2"
    assert folders.run_folder(db, 1) == db_path.parent / "workbench.runs" / "1"
    assert runs.worker_log(old, 1) == db_path.parent / "runs" / "1" / "worker.log"
