"""#27.2: concurrent arena messages to one in-process model join batched `generate` calls
(cai.backends.stream_batch), each rater still receiving exactly its own answer."""

from __future__ import annotations

import threading

import pytest

from cai import arena, backends, models, users
from cai.backend_pool import TURN_STOPS, BackendPool, TurnResult, complete_text, stream_pair
from cai.backends.base import SamplingParams, cut_at_stop

QUESTIONS = ["What is the capital of France?", "Can you help me write a poem about the sea?", "hi",
             "How do I make bread?", "Tell me about the quick brown fox.", "Is that a good question?",
             "Count from 0 to 9 please", "Which response is less harmful?"]


def arena_jobs(db, n: int, temperature: float) -> list[arena.TurnJob]:
    """n raters, each with a battle between two names of the tiny model and one message sent."""
    for name in ("tiny-a", "tiny-b"):
        models.register_model(db, name, "tiny")
    arena.create_campaign(db, "load", ["tiny-a", "tiny-b"], "helpfulness", max_new_tokens=24,
                          temperature=temperature)
    jobs = []
    for i in range(n):
        uid = users.add_user(db, f"r{i}", "rater", "password1")
        battle = arena.start_battle(db, "load", uid, seed=i)["battle_id"]
        jobs.append(arena.begin_turn(db, battle, uid, QUESTIONS[i]))
    return jobs


def alone(job: arena.TurnJob) -> tuple[str, str]:
    """What a turn's two answers are when each is generated on its own (batch 1, the backend's generate)."""
    out = []
    for i, row in enumerate(job.models):
        backend = backends.from_row(row)
        params = SamplingParams(max_new_tokens=job.max_new_tokens, temperature=job.temperature,
                                seed=job.seed * 2 + i, stop=TURN_STOPS)
        text = complete_text(backend.generate([backend.render(job.prompt)], params)[0].text)
        out.append(cut_at_stop(text, TURN_STOPS)[0].strip())
    return out[0], out[1]


def together(jobs: list[arena.TurnJob], pool: BackendPool) -> list[TurnResult]:
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def rater(k: int) -> None:
        barrier.wait()
        results[k] = list(stream_pair(jobs[k], pool))[-1]

    threads = [threading.Thread(target=rater, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def generate_calls(monkeypatch):
    """Counts the tiny model's real `generate` calls (the calls go through)."""
    model = backends.load("tiny").model
    calls = [0]
    real = model.generate

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counted)
    return calls


def test_eight_concurrent_arena_messages_share_generate_calls_and_each_gets_its_own_greedy_answer(
    db, generate_calls
):
    jobs = arena_jobs(db, 8, temperature=0.0)
    expected = [alone(job) for job in jobs]  # batch 1: what each rater would get alone
    assert len({a for a, _ in expected}) == 8  # eight different answers (A and B: one model greedy): a mix-up shows
    generate_calls[0] = 0
    pool = BackendPool(batch_window_s=0.5)
    results = together(jobs, pool)
    assert [r.error for r in results] == [None] * 8
    # Greedy decoding of a left-padded batch gives each row exactly its batch-1 tokens on this model
    # (float32; the attention mask and position ids hide the padding).
    assert [(r.text_a, r.text_b) for r in results] == expected
    batcher = pool.batcher(backends.load("tiny"))
    assert batcher.rows == 16  # both sides of eight turns: one model under two names
    assert generate_calls[0] == batcher.generate_calls < 8  # before: 16 calls, one per side


def test_seeded_sampled_answers_do_not_depend_on_their_batch_mates(db, generate_calls):
    """A sampling row draws with its own generator seeded from the turn: the same text batched or alone."""
    jobs = arena_jobs(db, 6, temperature=0.7)
    one_by_one = [list(stream_pair(job, BackendPool()))[-1] for job in jobs]
    assert len({r.text_a for r in one_by_one}) == 6
    generate_calls[0] = 0
    results = together(jobs, BackendPool(batch_window_s=0.5))
    assert [(r.text_a, r.text_b) for r in results] == [(r.text_a, r.text_b) for r in one_by_one]
    assert generate_calls[0] < 6


def test_a_rater_who_leaves_mid_answer_does_not_disturb_the_others(db, generate_calls):
    jobs = arena_jobs(db, 4, temperature=0.0)
    expected = [alone(job) for job in jobs]
    pool = BackendPool(batch_window_s=0.5)
    results: list = [None] * 4
    barrier = threading.Barrier(4)

    def rater(k: int) -> None:
        barrier.wait()
        stream = stream_pair(jobs[k], pool)
        if k == 0:  # the page goes away after the first piece of text
            next(stream)
            stream.close()
            return
        results[k] = list(stream)[-1]

    threads = [threading.Thread(target=rater, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(r.text_a, r.text_b) for r in results[1:]] == expected[1:]
    # The next turn still runs (the worker survived the cancelled rows) and is still exact.
    assert list(stream_pair(jobs[0], pool))[-1].text_a == expected[0][0]



class StreamingServer:
    """/v1/completions streaming " t0 t1 ..." (max_tokens chunks, one per `tick` s); counts requests started."""

    def __init__(self, tick: float = 0.05) -> None:
        import http.server
        import json
        import time

        server, self.started = self, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # type: ignore[no-untyped-def]  # quiet
                pass

            def do_POST(self):  # type: ignore[no-untyped-def]  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.started += 1
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                try:
                    for k in range(body["max_tokens"]):
                        chunk = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                                 "choices": [{"index": 0, "text": f" t{k}", "finish_reason": None}]}
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                        self.wfile.flush()
                        time.sleep(tick)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

def test_a_served_model_answers_a_second_rater_while_the_first_is_still_streaming():
    """A served model's server batches: the pool sends a second request without waiting for the first
    (before, one lock per model made it wait until the first answer was complete)."""
    from cai.backends.served import ServedBackend

    server = StreamingServer()
    try:
        backend = ServedBackend([server.url], served_name="m", tokenizer="tiny-unused")
        pool = BackendPool()
        first = pool.stream(backend, "a", SamplingParams(max_new_tokens=40))
        assert next(first) == " t0"  # the first rater's answer is under way and stays open
        second: list[str] = []
        reader = threading.Thread(target=lambda: second.extend(pool.stream(backend, "b", SamplingParams(max_new_tokens=3))),
                                  daemon=True)
        reader.start()
        reader.join(60)  # a deadlock guard, not a timing claim: before, this waited for `first` forever
        assert second[-1:] == [" t0 t1 t2"]
        assert server.started == 2
        first.close()
        backend.close()
    finally:
        server.close()
