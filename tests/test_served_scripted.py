"""The served backend without a real server: cancel inside a generation or a scoring against a scripted
slow OpenAI-compatible server (one token per tick; a scoring request answers after a delay; it records
which requests ran to the end and which the client cut, as vLLM aborts those), and how scoring groups
its requests."""

from __future__ import annotations

import http.server
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cai.backends import Cancelled, SamplingParams, model_path
from cai.backends.served import ServedBackend

ROOT = Path(__file__).resolve().parents[1]


class SlowServer:
    """/v1/completions streaming "t0 t1 ..." (one chunk per `tick` seconds), then usage and [DONE].

    A scoring request (one with `allowed_token_ids`) streams, after `score_delay` seconds (or the next of
    `score_delays`), one choice per token prompt whose log-prob is -len(prompt)/100 - allowed/10000; a
    client that goes away meanwhile counts as cut.
    """

    def __init__(self, tick: float = 0.05) -> None:
        server = self
        self.tick = tick
        self.started = self.finished = self.cut = 0
        self.break_after = 0  # > 0: the next stream's connection drops after this many tokens
        self.score_delay = 0.0
        self.score_delays: list[float] = []
        self.score_short = 0  # > 0: the next scoring answers only this many prompts, then ends its stream
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if "allowed_token_ids" in body:
                    return self.score(body)
                assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
                n = body["max_tokens"]
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                server.count("started")
                drop, server.break_after = server.break_after, 0
                try:
                    for k in range(n):
                        if drop and k == drop:
                            self.close_connection = True
                            self.connection.shutdown(2)  # mid-stream, as a dying server would
                            return
                        last = "length" if k == n - 1 else None
                        self.event({"choices": [{"index": 0, "text": f" t{k}", "finish_reason": last}]})
                        time.sleep(server.tick)
                    self.event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n,
                                                         "total_tokens": n + 3}})  # fmt: skip
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.count("cut")
                    return
                server.count("finished")

            def score(self, body: dict) -> None:
                assert body["stream"] is True and (body["max_tokens"], body["logprobs"]) == (1, 0)
                prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
                [allowed] = body["allowed_token_ids"]
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                server.count("started")
                with server.lock:
                    delay = server.score_delays.pop(0) if server.score_delays else server.score_delay
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:  # "computing"; a client that leaves is seen at once
                    if select.select([self.connection], [], [], server.tick)[0]:
                        try:
                            gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                        except ConnectionError:
                            gone = True
                        if gone:
                            server.count("cut")
                            return
                with server.lock:
                    short, server.score_short = server.score_short, 0
                for i, prompt in enumerate(prompts[:short] if short else prompts):
                    lp = -len(prompt) / 100 - allowed / 10000
                    logprobs = {"text_offset": [0], "token_logprobs": [lp], "tokens": ["x"], "top_logprobs": [{"x": lp}]}
                    self.event({"choices": [{"index": i, "text": "x", "finish_reason": "length", "logprobs": logprobs}]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                server.count("finished")

            def event(self, chunk: dict) -> None:
                chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m", **chunk}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def wait_for(self, what: str, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while getattr(self, what) < n:
            assert time.monotonic() < deadline, f"server: {what} = {getattr(self, what)}, expected {n}"
            time.sleep(0.02)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow():
    server = SlowServer()
    yield server
    server.close()


def test_a_stream_that_runs_to_the_end_gives_text_usage_and_finish_reason(slow):
    backend = ServedBackend([slow.url], served_name="m", tokenizer="tiny-unused")
    out = backend.generate(["a", "b"], SamplingParams(max_new_tokens=3))
    assert [(c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in out] == [
        (" t0 t1 t2", 3, 3, "length")
    ] * 2
    slow.wait_for("finished", 2)  # the server counts a request done after its last write
    assert (slow.started, slow.finished, slow.cut) == (2, 2, 0)
    backend.close()


def test_per_prompt_seeds_go_with_their_prompt_not_its_place_in_the_call(slow):
    backend = ServedBackend([slow.url], served_name="m", tokenizer="tiny-unused")
    params = SamplingParams(temperature=0.7, seed=5, seeds=(11, 12))
    assert [backend._request(params, i)["seed"] for i in (0, 1)] == [11, 12]
    assert [backend._request(SamplingParams(seed=5), i)["seed"] for i in (0, 1)] == [5 * 100_003, 5 * 100_003 + 1]
    with pytest.raises(ValueError, match="got 2 seeds for 1 prompts"):
        backend.generate(["a"], params)
    backend.close()


def test_a_cancel_cuts_every_stream_in_flight(slow):
    backend = ServedBackend([slow.url], served_name="m", tokenizer="tiny-unused")
    backend.stop_poll_s = 0.05
    backend.should_stop = lambda: slow.started == 4  # cancel once every request streams
    out = backend.generate(["a", "b", "c", "d"], SamplingParams(max_new_tokens=2000))  # 100 s uncut
    slow.wait_for("cut", 4)  # the server saw every client go away (vLLM then aborts the request)
    assert slow.finished == 0
    for c in out:
        assert c.finish_reason == "length"
        assert 0 < c.completion_tokens < 2000
        assert c.text == "".join(f" t{k}" for k in range(c.completion_tokens))
    backend.close()


def interrupt_child(slow: SlowServer, code: str) -> None:
    """Run `code` (Python, after the imports a served client needs) in a child process; once the server has
    started 2 requests, send the child SIGINT: it must exit with KeyboardInterrupt, and the server must see
    both requests cut."""
    script = (  # Ctrl-C's handler even when this suite runs in a background job, whose children ignore SIGINT
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from cai.backends import SamplingParams\n"
        "from cai.backends.served import ServedBackend\n" + code
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        slow.wait_for("started", 2, timeout=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # uncut, the requests would run for minutes
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    slow.wait_for("cut", 2)


def test_ctrl_c_with_requests_in_flight_exits_without_waiting_for_them(slow):
    interrupt_child(slow, f"b = ServedBackend([{slow.url!r}], served_name='m', tokenizer='unused')\n"
                          "b.generate(['a', 'b'], SamplingParams(max_new_tokens=100000))\n")
    assert slow.finished == 0


def test_scoring_requests_group_prefixes_by_the_token_they_allow():
    from cai.backends.served import score_requests

    # two prompts [1, 2] and [1, 3], options " (A)" = [7, 8, 9] and " (B)" = [7, 5, 9]
    wave1 = [(1, 2, 7, 8), (1, 2, 7, 8, 9), (1, 2, 7, 5), (1, 2, 7, 5, 9),
             (1, 3, 7, 8), (1, 3, 7, 8, 9), (1, 3, 7, 5), (1, 3, 7, 5, 9)]  # fmt: skip
    assert score_requests(wave1, 16) == [
        [(1, 2, 7, 8), (1, 3, 7, 8)],
        [(1, 2, 7, 8, 9), (1, 2, 7, 5, 9), (1, 3, 7, 8, 9), (1, 3, 7, 5, 9)],
        [(1, 2, 7, 5), (1, 3, 7, 5)],
    ]
    assert score_requests(wave1, 3)[1:3] == [
        [(1, 2, 7, 8, 9), (1, 2, 7, 5, 9), (1, 3, 7, 8, 9)],
        [(1, 3, 7, 5, 9)],
    ]
    assert score_requests(wave1[:2], 1) == [[(1, 2, 7, 8)], [(1, 2, 7, 8, 9)]]


def test_a_stream_that_breaks_midway_is_retried_from_the_start(slow):
    slow.break_after = 2  # the first request's connection drops after 2 tokens; the retry runs through
    backend = ServedBackend([slow.url], served_name="m", tokenizer="unused", backoff=0.01)
    out = backend.generate(["a"], SamplingParams(max_new_tokens=4))
    assert [(c.text, c.completion_tokens) for c in out] == [(" t0 t1 t2 t3", 4)]
    slow.wait_for("finished", 1)  # the server counts a request done after its last write
    assert (slow.started, slow.finished) == (2, 1)
    backend.close()


# -- scoring --------------------------------------------------------------------------------------

PROMPTS = ["\n\nHuman: hi\n\nAssistant:", "\n\nHuman: bye\n\nAssistant:"]  # 11 tokens each (tiny)


def test_scoring_streams_its_requests_and_sums_each_options_tokens(slow):
    # " (A)" and " (B)" are 3 tokens after the prompt, [342, 35, 11] and [342, 36, 11], read at prefixes
    # of 11, 12 and 13 tokens: wave 1 asks for both prompts' 342 in one request, wave 2 for 35, 36, 11.
    backend = ServedBackend([slow.url], served_name="m", tokenizer=str(model_path("tiny")))
    scores = backend.option_logprobs(PROMPTS, [[" (A)", " (B)"]] * 2)
    a = -(0.11 + 0.0342) - (0.12 + 0.0035) - (0.13 + 0.0011)
    b = -(0.11 + 0.0342) - (0.12 + 0.0036) - (0.13 + 0.0011)
    assert scores == [pytest.approx([a, b], abs=1e-12)] * 2
    slow.wait_for("finished", 4)  # the server counts a request done after its last write
    assert (slow.started, slow.finished, slow.cut) == (4, 4, 0)
    backend.close()


def test_a_scoring_stream_that_ends_early_is_retried(slow):
    slow.score_short = 1  # the first request answers one of its two prompts, then says [DONE]
    backend = ServedBackend([slow.url], served_name="m", tokenizer=str(model_path("tiny")), backoff=0.01)
    scores = backend.option_logprobs(PROMPTS, [[" (A)", " (B)"]] * 2)
    a = -(0.11 + 0.0342) - (0.12 + 0.0035) - (0.13 + 0.0011)
    assert scores[1][0] == pytest.approx(a, abs=1e-12)
    slow.wait_for("finished", 5)  # the server counts a request done after its last write
    assert (slow.started, slow.finished, slow.cut) == (5, 5, 0)  # 4 requests, the first one twice
    backend.close()


def _scoring_backend(slow: SlowServer) -> ServedBackend:
    backend = ServedBackend([slow.url], served_name="m", tokenizer=str(model_path("tiny")))
    backend.stop_poll_s = 0.05
    backend.score_prompts = 1  # one request per prompt: the 4 prompts' first tokens are 4 requests
    return backend


def test_a_cancel_cuts_every_scoring_request_in_flight(slow):
    slow.score_delays, slow.score_delay = [0.1, 0.1], 300.0  # two requests answer, two would take 5 min
    backend = _scoring_backend(slow)
    backend.should_stop = lambda: slow.started == 4 and slow.finished == 2
    prompts = [f"\n\nHuman: q{i}\n\nAssistant:" for i in range(4)]
    t = time.monotonic()
    with pytest.raises(Cancelled, match=r"^scoring cancelled: 2 of 4 requests cut$"):
        backend.option_logprobs(prompts, [[" (A)", " (B)"]] * 4)
    assert time.monotonic() - t < 60  # uncut: 300 s
    slow.wait_for("cut", 2)  # the server saw both clients go away (vLLM then aborts the request)
    time.sleep(0.3)
    slow.wait_for("finished", 2)  # the server counts a request done after its last write
    assert (slow.started, slow.finished, slow.cut) == (4, 2, 2)  # and the second wave was never sent
    backend.close()


def test_a_cancel_between_scoring_waves_sends_no_more_requests(slow):
    backend = _scoring_backend(slow)
    stop = threading.Event()
    first_wave = backend._score_wave

    def then_cancel(keys):
        out = first_wave(keys)
        stop.set()
        return out

    backend._score_wave = then_cancel
    backend.should_stop = stop.is_set
    with pytest.raises(Cancelled, match=r"^scoring cancelled before its next requests were sent$"):
        backend.option_logprobs(PROMPTS, [[" (A)", " (B)"]] * 2)
    slow.wait_for("finished", 2)  # the server counts a request done after its last write
    assert (slow.started, slow.finished, slow.cut) == (2, 2, 0)
    backend.close()


def test_ctrl_c_while_scoring_cuts_every_request(slow):
    slow.score_delay = 300.0
    interrupt_child(slow, f"b = ServedBackend([{slow.url!r}], served_name='m', tokenizer={str(model_path('tiny'))!r})\n"
                          f"b.score_prompts = 1\nb.option_logprobs({PROMPTS!r}, [[' (A)', ' (B)']] * 2)\n")
    assert (slow.started, slow.finished) == (2, 0)


def test_a_run_cancelled_while_scoring_is_cancelled_not_failed(slow, db, db_path, shared):
    from cai import models, runs
    from cai.stages import HHHConfig

    slow.score_delay = 300.0
    models.register_served(db, "slowsrv", [slow.url], served_name="m", tokenizer=str(model_path("tiny")))
    config = HHHConfig(data=str(shared / "cai-paper/evals/HHH-dev-sample.jsonl"), model="slowsrv", limit=2)
    run_id, proc = runs.start(db, db_path, config)
    slow.wait_for("started", 1, timeout=120)
    runs.request_cancel(db, run_id)
    proc.wait(timeout=60)  # uncut, the scoring would take 300 s
    run = runs.get_run(db, run_id)
    assert (run["status"], run["error"], run["done"]) == ("cancelled", None, 0)
    slow.wait_for("cut", slow.started)
    assert slow.finished == 0
    assert db["hhh_results"].count_where("run_id = ?", [run_id]) == 0
