"""Serving the arena's models: a pool of loaded backends and both answers of a turn streamed side by side.

Each side generates in its own thread and pushes its text as it grows, so the rater watches A and B
write at once; a model serves one request at a time (a lock per backend), and failures come back
as a side-neutral message while the real error stays on the server.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cai.arena import TurnJob
from cai.backends.base import HUMAN_STOP, Backend, SamplingParams, cut_at_stop

log = logging.getLogger(__name__)


@dataclass
class BackendPool:
    """Loaded backends by model id; `loader(model_row)` makes one the first time it is needed."""

    loader: Callable[[dict[str, Any]], Backend] | None = None
    _items: dict[int, tuple[Backend, threading.Lock]] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def get(self, row: dict[str, Any]) -> tuple[Backend, threading.Lock]:
        with self._guard:
            if row["id"] not in self._items:
                backend = (self.loader or default_loader)(row)
                self._items[row["id"]] = (backend, threading.Lock())
            return self._items[row["id"]]


def default_loader(row: dict[str, Any]) -> Backend:
    from cai import backends

    return backends.from_row(row)


@dataclass
class TurnResult:
    """Both final answers, seconds each took, and a server-side error (None when both answered)."""

    text_a: str
    text_b: str
    seconds: tuple[float, float]
    error: str | None


def visible(text: str, stop: tuple[str, ...] = (HUMAN_STOP,)) -> str:
    """Text as the rater may see it mid-stream: cut at a stop string, minus a half-written one."""
    text, _ = cut_at_stop(text, stop)
    for s in stop:
        for k in range(len(s) - 1, 0, -1):
            if text.endswith(s[:k]):
                return text[:-k]
    return text


def stream_text(backend: Backend, prompt: str, params: SamplingParams) -> Iterator[str]:
    """The completion as it grows (cumulative text). transformers models stream token by token;
    any other backend answers in one piece."""
    stream = getattr(backend, "stream", None)
    if callable(stream):
        yield from stream(prompt, params)
        return
    if hasattr(backend, "model") and hasattr(backend, "tokenizer"):
        yield from _hf_stream(backend, prompt, params)
        return
    yield backend.generate([prompt], params)[0].text


def _hf_stream(backend: Any, prompt: str, params: SamplingParams) -> Iterator[str]:
    import torch
    from transformers import TextIteratorStreamer

    tok = backend.tokenizer
    enc = tok(prompt, return_tensors="pt").to(backend.model.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=300)
    sample = params.temperature > 0
    kwargs: dict[str, Any] = dict(
        **enc,
        streamer=streamer,
        max_new_tokens=params.max_new_tokens,
        do_sample=sample,
        pad_token_id=tok.pad_token_id,
        stop_strings=[s for s in params.stop if s] or None,
        tokenizer=tok,
    )
    if sample:
        kwargs.update(temperature=params.temperature, top_p=params.top_p)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                backend.model.generate(**kwargs)
        except BaseException as exc:  # surfaced to the consumer below
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield cut_at_stop(text, params.stop)[0]
    worker.join()
    if failure:
        raise failure[0]


def stream_pair(job: TurnJob, pool: BackendPool) -> Iterator[tuple[str, str] | TurnResult]:
    """Yield (text_a, text_b) as both sides grow, then one TurnResult with the final answers."""
    updates: queue.Queue[tuple[int, str | None, str | None]] = queue.Queue()
    texts = ["", ""]
    seconds = [0.0, 0.0]
    errors: list[str] = []

    def side(i: int) -> None:
        start = time.perf_counter()
        try:
            backend, lock = pool.get(job.models[i])
            params = SamplingParams(
                max_new_tokens=job.max_new_tokens, temperature=job.temperature, seed=job.seed * 2 + i
            )
            with lock:
                for text in stream_text(backend, backend.render(job.prompt), params):
                    updates.put((i, text, None))
        except Exception as exc:
            log.exception("arena battle %s turn %s: model id %s failed", job.battle_id, job.turn, job.model_ids[i])
            updates.put((i, None, f"side {'AB'[i]}: {type(exc).__name__}: {exc}"))
        finally:
            seconds[i] = time.perf_counter() - start
            updates.put((i, None, None))

    threads = [threading.Thread(target=side, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    running = 2
    while running:
        i, text, error = updates.get()
        if error:
            errors.append(error)
        elif text is None:
            running -= 1
        else:
            texts[i] = text
            yield visible(texts[0]), visible(texts[1])
    for t in threads:
        t.join()
    final = [cut_at_stop(t, (HUMAN_STOP,))[0].strip() for t in texts]
    yield TurnResult(final[0], final[1], (seconds[0], seconds[1]), "; ".join(errors) or None)
