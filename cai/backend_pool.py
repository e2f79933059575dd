"""The app's loaded models and both answers of an arena turn streamed side by side.

One pool per process (`shared_pool()`) serves every tab and page; it loads a registry row as registered (backend,
chat). `BackendPool.stream` is how callers generate: concurrent requests to one in-process transformers model
join batched `generate` calls (cai.backends.stream_batch), each caller still reading only its own tokens; a
served model takes them all at once (its server batches); any other backend serves one request at a time under
its lock.
Each side of a turn generates in its own thread and pushes its text as it grows, so the rater watches A and B
write at once; failures come back as a side-neutral message while the real error stays on the server. Streams
decode tokens incrementally (a character split over several byte tokens appears only once whole) and stop at
the next turn marker.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from cai.arena import TurnJob
from cai.backends.base import HUMAN_STOP, Backend, SamplingParams, cut_at_stop

log = logging.getLogger(__name__)

# Where an answer ends: the next turn of either speaker (a base model runs on into a made-up dialogue). One
# newline, not the transcript's two, so a turn a small model opens after a single line break is cut as well.
TURN_STOPS = (HUMAN_STOP[1:], "\nAssistant:")
# End-of-turn tokens of common chat templates (Gemma, ChatML, Llama 3, Phi): generation stops at any present.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")
REPLACEMENT = "\ufffd"


def complete_text(text: str) -> str:
    """Decoded text without replacement characters: a trailing one is a character whose remaining bytes have
    not been generated yet (it appears once they are); any other one stands for bytes that are not UTF-8 at all,
    which a reader cannot use either."""
    return text.replace(REPLACEMENT, "")


class IncrementalDecoder:
    """The text of a growing token sequence, as vLLM's detokenizer and transformers' `TextIteratorStreamer`
    do it: decode the whole sequence again at each step (tokenizers merge byte tokens and leading spaces
    only in context), and never hand out a half-decoded character."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []

    def push(self, ids: list[int]) -> str:
        """Add tokens; the whole text so far that is safe to show."""
        self.ids.extend(ids)
        return complete_text(self.decode(self.ids))


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Ids of the end-of-turn tokens this tokenizer knows (none for a plain base-model vocabulary)."""
    vocab = tokenizer.get_vocab()
    return sorted({vocab[t] for t in END_OF_TURN_TOKENS if t in vocab})


@dataclass
class BackendPool:
    """Loaded backends by registry row; `loader(model_row)` makes one the first time it is needed.

    A row is known by everything that decides what gets loaded, not by its id alone, since one process may
    serve several databases whose ids repeat. The lock (and the batcher) belong to the loaded backend, not to
    the row: two names for one set of weights (which `backends.load` caches once) share them as well.
    """

    loader: Callable[[dict[str, Any]], Backend] | None = None
    _backends: dict[str, Backend] = field(default_factory=dict)
    _locks: dict[int, threading.Lock] = field(default_factory=dict)  # by id() of a backend held in _backends
    _batchers: dict[int, Any] = field(default_factory=dict)  # StreamBatcher by id() of a transformers backend
    _guard: threading.Lock = field(default_factory=threading.Lock)
    batch_window_s: float = 0.02  # how long a batch waits for more requests after its first (stream_batch)

    def get(self, row: dict[str, Any]) -> tuple[Backend, threading.Lock]:
        key = row_key(row)
        with self._guard:
            backend = self._backends.get(key)
            if backend is None:
                backend = self._backends[key] = self._load(row)
            if getattr(backend, "urls", None):  # a served model's server batches its callers: no turn-taking
                return backend, threading.Lock()
            return backend, self._locks.setdefault(id(backend), threading.Lock())

    def stream(self, backend: Backend, prompt: str, params: SamplingParams) -> Iterator[str]:
        """The completion as it grows (cumulative text), as `stream_text` gives it: an in-process transformers
        model joins concurrent requests into batched `generate` calls; a served model takes requests at once
        (its server batches them); any other backend answers one request at a time under its lock."""
        if batchable(backend):
            yield from _batched_stream(self.batcher(backend), prompt, params)
            return
        if _served(backend):
            yield from stream_text(backend, prompt, params)
            return
        with self._lock_of(backend):
            yield from stream_text(backend, prompt, params)

    def batcher(self, backend: Any) -> Any:
        """The joining queue of an in-process transformers backend (made on first use)."""
        from cai.backends.stream_batch import StreamBatcher

        with self._guard:
            found = self._batchers.get(id(backend))
            if found is None or found.backend is not backend:
                eos = set(getattr(backend, "_eos", set())) | set(end_of_turn_ids(backend.tokenizer))
                lock = self._locks.setdefault(id(backend), threading.Lock())
                found = self._batchers[id(backend)] = StreamBatcher(backend, lock, eos, window_s=self.batch_window_s)
            return found

    def _lock_of(self, backend: Any) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(id(backend), threading.Lock())

    def loaded(self, row: dict[str, Any]) -> bool:
        """Whether `row`'s model is loaded already (else the next `get` loads it: say so, with its ETA)."""
        return row_key(row) in self._backends

    def _load(self, row: dict[str, Any]) -> Backend:
        """Load with the pool's loader; the real loader's seconds per phase are kept (cai.load_eta)."""
        if self.loader is not None:
            return self.loader(row)
        from cai import load_eta

        which, start = load_eta.phase(row), time.perf_counter()
        backend = default_loader(row)
        if which != "serve":
            load_eta.record(row, which, time.perf_counter() - start)
        return backend


def row_key(row: dict[str, Any]) -> str:
    """What identifies a registry row's model: id, name, path, backend, chat flag and, for a served model,
    where it is served (a new endpoint makes a new backend)."""
    fields = {k: row.get(k) for k in ("id", "name", "path", "backend", "chat")}
    meta = row.get("meta") or {}
    fields["meta"] = {k: meta.get(k) for k in ("endpoints", "served_name", "tokenizer", "weights")}
    return json.dumps(fields, sort_keys=True, default=str)


def default_loader(row: dict[str, Any]) -> Backend:
    """A registry row's backend as registered (its backend kind and chat flag), from the per-process cache."""
    from cai import backends

    return backends.from_row(row)


_SHARED = BackendPool()


def shared_pool() -> BackendPool:
    """The process's pool: every tab and page built without a pool of its own serves its models from it."""
    return _SHARED


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


class _TokenStreamer:
    """A transformers streamer (`put`/`end`) that hands the generated token ids, not text, to a queue."""

    def __init__(self, timeout: float = 300.0) -> None:
        self.queue: queue.Queue[list[int] | None] = queue.Queue()
        self.timeout = timeout
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        self.queue.put([int(v) for v in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator[list[int]]:
        while (ids := self.queue.get(timeout=self.timeout)) is not None:
            yield ids


def batchable(backend: Any) -> bool:
    """An in-process transformers model (weights and tokenizer here, no streaming of its own)."""
    return hasattr(backend, "model") and hasattr(backend, "tokenizer") and not callable(getattr(backend, "stream", None))


def _served(backend: Any) -> bool:
    from cai.backends.served import ServedBackend

    return isinstance(backend, ServedBackend)


def _batched_stream(batcher: Any, prompt: str, params: SamplingParams) -> Iterator[str]:
    """`stream_text` through the batcher: the prompt tokenized as `_hf_stream` does, the text decoded here."""
    tok = batcher.backend.tokenizer
    decoder = IncrementalDecoder(lambda ids: tok.decode(ids, skip_special_tokens=True))
    for ids in batcher.stream_ids(tok(prompt)["input_ids"], params):
        yield cut_at_stop(decoder.push(ids), params.stop)[0]


def _hf_stream(backend: Any, prompt: str, params: SamplingParams) -> Iterator[str]:
    import torch

    tok = backend.tokenizer
    enc = tok(prompt, return_tensors="pt").to(backend.model.device)
    streamer = _TokenStreamer()
    sample = params.temperature > 0
    eos = set(getattr(backend, "_eos", set())) | set(end_of_turn_ids(tok))
    kwargs: dict[str, Any] = dict(
        **enc,
        streamer=streamer,
        max_new_tokens=params.max_new_tokens,
        do_sample=sample,
        pad_token_id=tok.pad_token_id,
        stop_strings=[s for s in params.stop if s] or None,
        tokenizer=tok,
    )
    if eos:
        kwargs["eos_token_id"] = sorted(eos)
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
    decoder = IncrementalDecoder(lambda ids: tok.decode(ids, skip_special_tokens=True))
    for ids in streamer:
        yield cut_at_stop(decoder.push(ids), params.stop)[0]
    worker.join()
    if failure:
        raise failure[0]


def context_tokens(backend: Any) -> int | None:
    """The context length of an in-process model (its config's `max_position_embeddings`), else None."""
    n = getattr(getattr(getattr(backend, "model", None), "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def context_overflow(job: TurnJob, pool: BackendPool) -> str | None:
    """A refusal when the turn's prompt plus its longest answer does not fit either model's context, else None.
    Checked for models whose tokenizer is at hand (in process); a served model's server refuses on its own."""
    for row in job.models:
        backend, _ = pool.get(row)
        limit, encode = context_tokens(backend), getattr(backend, "encode", None)
        if limit and callable(encode):
            n = len(encode(backend.render(job.prompt)))
            if n + job.max_new_tokens > limit:
                return (f"this conversation ({n:,} tokens) and an answer ({job.max_new_tokens} tokens) do not fit "
                        f"a model's context of {limit:,} tokens: send a shorter message or start a new battle")
    return None


def stream_pair(job: TurnJob, pool: BackendPool) -> Iterator[tuple[str, str] | TurnResult]:
    """Yield (text_a, text_b) as both sides grow, then one TurnResult with the final answers."""
    updates: queue.Queue[tuple[int, str | None, str | None]] = queue.Queue()
    texts = ["", ""]
    seconds = [0.0, 0.0]
    errors: list[str] = []
    gone = threading.Event()

    def side(i: int) -> None:
        start = time.perf_counter()
        try:
            backend, _ = pool.get(job.models[i])
            params = SamplingParams(
                max_new_tokens=job.max_new_tokens, temperature=job.temperature, seed=job.seed * 2 + i,
                stop=TURN_STOPS,
            )
            with closing(pool.stream(backend, backend.render(job.prompt), params)) as texts_i:
                for text in texts_i:
                    if gone.is_set():  # the reader went away (page closed): free the model for the others
                        break
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
    try:
        while running:
            i, text, error = updates.get()
            if error:
                errors.append(error)
            elif text is None:
                running -= 1
            else:
                texts[i] = complete_text(text)
                yield visible(texts[0], TURN_STOPS), visible(texts[1], TURN_STOPS)
    finally:
        gone.set()
    for t in threads:
        t.join()
    final = [cut_at_stop(t, TURN_STOPS)[0].strip() for t in texts]
    yield TurnResult(final[0], final[1], (seconds[0], seconds[1]), "; ".join(errors) or None)
