"""Served models: the registry's endpoints, `cai models add --endpoint`, and a real vLLM server behind them.

The fast tests need no server (registry rows, flag errors, an endpoint that refuses connections).
The vllm-marked ones share the session's one vLLM server (conftest `vllm_default`); two endpoints
are two counting proxies in front of it, so the test can count requests per endpoint and kill one
mid-run without paying for a second server.
"""

from __future__ import annotations

import json
import time

import pytest

from cai import backends, models, runs, store
from cai.backends import SamplingParams
from cai.backends.served import ServedError, health
from cai.cli import main
from cai.stages import HHHConfig

HHH = "cai-paper/evals/HHH-dev-sample.jsonl"
# Served vs transformers, both float32: an item's p(correct) differed by at most 7.1e-6 over the 8 HHH
# items (p_plain, p_swapped, p_avg); the tolerance leaves 14x room for another machine's kernels. The
# nearest p lies 0.0038 from a tie-band edge, so such a difference cannot change a verdict.
P_TOL = 1e-4


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- registry and CLI (no server) -----------------------------------------------------------------


def test_register_served_adds_endpoints_under_one_name(db):
    first = models.register_served(db, "srv", ["http://a:8000/v1"], served_name="m", tokenizer="tiny")
    again = models.register_served(db, "srv", ["http://b:8000", "http://a:8000/v1/"])
    assert first == again
    row = models.get_model(db, "srv")
    assert (row["path"], row["backend"], row["chat"]) == ("http://a:8000/v1", "served", False)
    assert row["meta"] == {
        "endpoints": ["http://a:8000/v1", "http://b:8000/v1"],
        "served_name": "m",
        "tokenizer": "tiny",
    }


def test_register_served_refuses_bad_input(db):
    models.register_model(db, "local", "tiny")
    with pytest.raises(models.ModelError, match="already exists and is not a served model"):
        models.register_served(db, "local", ["http://a:1/v1"])
    with pytest.raises(models.ModelError, match="must be an http"):
        models.register_served(db, "x", ["a:1"])
    models.register_served(db, "srv", ["http://a:1/v1"], served_name="m")
    with pytest.raises(models.ModelError, match="is served as 'm', not 'n'"):
        models.register_served(db, "srv", ["http://b:1/v1"], served_name="n")
    assert [r["name"] for r in models.list_models(db)] == ["local", "srv"]


def test_cli_models_add_endpoint(capsys, db_path):
    code, out, _ = run_cli(
        capsys, "models", "add", "srv", "--endpoint", "http://127.0.0.1:9/v1", "--endpoint",
        "http://127.0.0.1:10", "--served-name", "m", "--tokenizer", "tiny", "--chat", "--json",
        "--db", str(db_path),
    )
    assert code == 0
    row = json.loads(out)
    assert {k: row[k] for k in ("name", "path", "backend", "chat", "meta")} == {
        "name": "srv",
        "path": "http://127.0.0.1:9/v1",
        "backend": "served",
        "chat": True,
        "meta": {
            "endpoints": ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"],
            "served_name": "m",
            "tokenizer": "tiny",
        },
    }
    code, out, _ = run_cli(capsys, "models", "health", "srv", "--json", "--db", str(db_path))
    assert code == 1
    assert [(r["endpoint"], r["ok"]) for r in json.loads(out)] == [
        ("http://127.0.0.1:9/v1", False),
        ("http://127.0.0.1:10/v1", False),
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "add", "x"], "give the model's PATH, or --endpoint URL"),
        (["models", "add", "x", "tiny", "--tokenizer", "tiny"], "--served-name and --tokenizer are for served"),
        (["models", "add", "x", "--endpoint", "ftp://h/v1"], "an endpoint must be an http(s) URL"),
        (["serve", "tiny", "--tensor-parallel-size", "0"], "--tensor-parallel-size must be >= 1, got 0"),
        (["serve", "tiny", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be in (0, 1]"),
    ],
)
def test_cli_bad_input_is_one_line(capsys, db_path, argv, message):
    code, _, err = run_cli(capsys, *argv, "--db", str(db_path))
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_every_endpoint_down_is_a_clear_error(db):
    models.register_served(db, "gone", ["http://127.0.0.1:9/v1"], served_name="m", tokenizer="tiny")
    backend = backends.load("gone", db=db, retries=1, backoff=0.01)
    with pytest.raises(ServedError, match=r"no endpoint answered after 2 attempts \(last: http://127.0.0.1:9/v1: "):
        backend.generate(["hi"], SamplingParams(max_new_tokens=2))
    assert backend.pool.endpoints[0].failures == 2


def test_served_model_without_weights_cannot_train(db):
    models.register_served(db, "srv", ["http://127.0.0.1:9/v1"])
    with pytest.raises(ValueError, match="'srv' is served at http://127.0.0.1:9/v1 and has no local weights"):
        backends.model_path("srv", db)
    models.register_served(db, "srv2", ["http://127.0.0.1:9/v1"], weights="tiny")
    assert backends.model_path("srv2", db) == backends.model_path("tiny")


# -- against the session's real vLLM server -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
def test_cai_serve_registered_its_endpoint(vllm_default):
    row = vllm_default.registered
    assert (row["name"], row["backend"], row["path"]) == ("default-served", "served", vllm_default.url)
    assert row["meta"]["endpoints"] == [vllm_default.url]
    assert (row["meta"]["served_name"], row["meta"]["weights"], row["meta"]["tokenizer"]) == (
        "default", "default", vllm_default.folder
    )
    assert row["meta"]["engine"]["dtype"] == "float32"
    assert health(vllm_default.url) == (True, "ok")


@pytest.mark.slow
@pytest.mark.vllm
def test_served_registry_hhh_matches_hf(capsys, db_path, shared, vllm_default, monkeypatch):
    """The issue's sequence: a served model registered by endpoint scores HHH like the local model.

    Both engines run in float32 (the session's server, and the worker's transformers backend through
    CAI_DTYPE), so they give the same accuracy and each item's p(correct) to within P_TOL.
    """
    monkeypatch.setenv("CAI_DTYPE", "float32")  # the worker's hf side in the server's dtype
    folder = backends.model_path("default")
    db = ["--db", str(db_path)]
    assert run_cli(capsys, "models", "add", "srv", "--endpoint", vllm_default.url, "--tokenizer", folder, *db)[0] == 0
    data = str(shared / HHH)
    results = {}
    for model in ("srv", "default"):
        code, out, err = run_cli(
            capsys, "eval", "hhh", "--model", model, "--data", data, "--limit", "8", "--json", *db
        )
        assert code == 0, err
        results[model] = json.loads(out)
    a, b = results["srv"], results["default"]
    assert (a["n"], b["n"]) == (8, 8)
    assert (a["accuracy"], a["accuracy_order_avg"]) == (b["accuracy"], b["accuracy_order_avg"])
    assert a["mean_p_correct"] == pytest.approx(b["mean_p_correct"], abs=P_TOL)
    conn = store.connect(db_path)
    srv_run, hf_run = sorted({r["run_id"] for r in conn.query("select run_id from hhh_results")})
    cols = ("p_plain", "p_swapped", "p_avg")
    p = {run: {r["idx"]: tuple(r[c] for c in cols) for r in conn.query("select * from hhh_results where run_id = ?", [run])}
         for run in (srv_run, hf_run)}  # fmt: skip
    assert sorted(p[srv_run]) == sorted(p[hf_run]) == list(range(8))
    diff = max(abs(x - y) for i in p[hf_run] for x, y in zip(p[srv_run][i], p[hf_run][i], strict=True))
    assert diff < P_TOL, f"max |p_served - p_hf| = {diff}"


@pytest.mark.slow
@pytest.mark.vllm
def test_two_endpoints_share_the_load(db, vllm_default, counting_proxy):
    a, b = counting_proxy(vllm_default.url), counting_proxy(vllm_default.url)
    models.register_served(db, "two", [a.url, b.url], served_name="default", tokenizer=vllm_default.folder)
    backend = backends.load("two", db=db, cache=False, max_in_flight=2)
    prompts = [f"\n\nHuman: Count to {n}.\n\nAssistant:" for n in range(8)]
    got = backend.generate(prompts, SamplingParams(max_new_tokens=8))
    assert got == vllm_default.generate(prompts, SamplingParams(max_new_tokens=8))  # prompt order kept
    assert a.completions + b.completions == 8
    assert a.completions >= 2 and b.completions >= 2  # at most 2 in flight each: both must take some
    backend.close()


def _wait_done(db, run_id: int, at_least: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while runs.get_run(db, run_id)["done"] < at_least:
        assert runs.get_run(db, run_id)["status"] in runs.ACTIVE, runs.get_run(db, run_id)
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.vllm
def test_endpoint_killed_mid_run(capsys, db, db_path, shared, vllm_default, counting_proxy):
    """One endpoint dies: the run goes on on the other. Both die: the run fails clearly; resume finishes it."""
    a, b = counting_proxy(vllm_default.url), counting_proxy(vllm_default.url)
    models.register_served(db, "two", [a.url, b.url], served_name="default", tokenizer=vllm_default.folder)
    config = HHHConfig(data=str(shared / HHH), model="two", limit=4, batch_size=1)

    run_id, proc = runs.start(db, db_path, config)
    _wait_done(db, run_id, 1)
    a.kill()
    proc.wait(timeout=600)
    run = runs.get_run(db, run_id)
    assert run["status"] == "done", run["error"]
    assert sorted(r["idx"] for r in db["hhh_results"].rows_where("run_id = ?", [run_id])) == list(range(4))

    c = counting_proxy(vllm_default.url)
    models.register_served(db, "one", [c.url], served_name="default", tokenizer=vllm_default.folder)
    run_id, proc = runs.start(db, db_path, HHHConfig(data=str(shared / HHH), model="one", limit=4, batch_size=1))
    _wait_done(db, run_id, 1)
    port = c.port
    c.kill()
    proc.wait(timeout=600)
    run = runs.get_run(db, run_id)
    assert run["status"] == "failed"
    assert "ServedError: no endpoint answered after 5 attempts (last: http://127.0.0.1:" in run["error"]
    kept = db["hhh_results"].count_where("run_id = ?", [run_id])
    assert 1 <= kept < 4

    counting_proxy(vllm_default.url, port)  # the server is back
    code, _, err = run_cli(capsys, "runs", "resume", str(run_id), "--db", str(db_path))
    assert code == 0, err
    run = runs.wait(db, run_id, timeout=600)
    assert run["status"] == "done", run["error"]
    assert sorted(r["idx"] for r in db["hhh_results"].rows_where("run_id = ?", [run_id])) == list(range(4))
    assert run["result"]["n"] == 4
