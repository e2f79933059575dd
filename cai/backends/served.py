"""The served backend: models behind the OpenAI-compatible API (`vllm serve`, SGLang, TGI), one or many endpoints.

Requests go out concurrently from a thread pool through the `openai` client; each takes the
least-loaded healthy endpoint (a bound on requests in flight per endpoint), so several servers are
data parallel. Connection errors, timeouts and 5xx answers are retried with backoff on any endpoint;
an endpoint that fails rests for a while. Option scoring asks only for the tokens that decide the
options (see `option_logprobs`), built by the same token rule as the transformers backend (tokens.py).
Every request streams, so a run's cancel or Ctrl-C closes the connections at once (vLLM aborts a request
whose client went away) instead of waiting for every completion or timeout: a generation then returns
the text it had, a scoring raises `Cancelled`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from cai.backends import tokens
from cai.backends.base import Cancelled, Completion, SamplingParams, check_seeds, cut_at_stop, render_chat

MAX_IN_FLIGHT = 32  # requests outstanding per endpoint
TIMEOUT_S = 600.0  # per request
RETRIES = 4  # further attempts after a failure that may pass (connection, timeout, 5xx)
BACKOFF_S = 0.5  # first wait; doubles per attempt
REST_S = 5.0  # an endpoint that failed gets no new requests for this long
SCORE_PROMPTS = 16  # token prompts per scoring request (each its own choice in the answer)
CANCEL_GRACE_S = 5.0  # after a cancel, how long to wait for the cut requests' threads to return


class ServedError(RuntimeError):
    """A served model could not answer (every endpoint down, or the server rejected the request)."""


@dataclass
class Endpoint:
    """One server: its base URL (ending in /v1), an openai client, and what it is doing now."""

    url: str
    client: Any
    in_flight: int = 0
    requests: int = 0  # sent so far (for tests and the Models tab)
    failures: int = 0
    resting_until: float = 0.0
    last_error: str = ""


def health(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether an endpoint answers: vLLM's /health beside /v1, else the standard /v1/models."""

    root = url.rstrip("/").removesuffix("/v1")
    for probe in (f"{root}/health", f"{url.rstrip('/')}/models"):
        try:
            r = httpx.get(probe, timeout=timeout)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if r.status_code == 200:
            return True, "ok"
    return False, f"HTTP {r.status_code}"


def score_requests(keys: Sequence[tuple[int, ...]], per_request: int) -> list[list[tuple[int, ...]]]:
    """Scoring requests for `keys` (a prefix + the one token it may continue with): keys that allow the
    same token share a request, `per_request` at most, in the order the keys came."""
    by_target: dict[int, list[tuple[int, ...]]] = {}
    for k in keys:
        by_target.setdefault(k[-1], []).append(k)
    n = max(1, per_request)
    return [g[a : a + n] for g in by_target.values() for a in range(0, len(g), n)]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's transport errors: openai 3.x streams through httpx2, older releases through httpx."""
    found: list[type[BaseException]] = [httpx.TransportError]
    try:
        import httpx2
    except ImportError:
        return tuple(found)
    return (*found, httpx2.TransportError)


# Imported here, on the importing thread: a first import inside several request threads at once can hand one
# of them a partially initialised module ("partially initialized module 'httpx' has no attribute ...").
TRANSPORT_ERRORS = _transport_errors()


def _retryable(exc: BaseException) -> bool:
    # the HTTP library's own errors reach us from a stream that breaks after its headers came
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, *TRANSPORT_ERRORS)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass
class Pool:
    """Endpoints and the rule that spreads requests over them."""

    urls: Sequence[str]
    max_in_flight: int = MAX_IN_FLIGHT
    timeout: float = TIMEOUT_S
    retries: int = RETRIES
    backoff: float = BACKOFF_S
    rest: float = REST_S
    endpoints: list[Endpoint] = field(init=False)
    _cond: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a served model needs at least one endpoint URL")
        self.endpoints = [
            Endpoint(
                u.rstrip("/"), openai.OpenAI(base_url=u, api_key="EMPTY", timeout=self.timeout, max_retries=0)
            )
            for u in self.urls
        ]

    def _acquire(self) -> Endpoint:
        """The least-loaded endpoint with room; a resting one only when all are resting."""
        with self._cond:
            while True:
                now = time.monotonic()
                free = [e for e in self.endpoints if e.in_flight < self.max_in_flight]
                awake = [e for e in free if e.resting_until <= now] or free
                if awake:
                    best = min(awake, key=lambda e: (e.resting_until > now, e.in_flight, e.requests))
                    best.in_flight += 1
                    best.requests += 1
                    return best
                self._cond.wait()

    def _release(self, endpoint: Endpoint, error: BaseException | None = None) -> None:
        with self._cond:
            endpoint.in_flight -= 1
            if error is not None:
                endpoint.failures += 1
                endpoint.resting_until = time.monotonic() + self.rest
                endpoint.last_error = f"{type(error).__name__}: {error}"
            self._cond.notify_all()

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """`fn(client)` on the least-loaded endpoint, retried with backoff (on any endpoint) when it may pass."""
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            endpoint = self._acquire()
            try:
                result = fn(endpoint.client)
            except Exception as exc:
                self._release(endpoint, exc if _retryable(exc) else None)
                if not _retryable(exc):
                    raise ServedError(f"{endpoint.url} rejected the request: {exc}") from exc
                errors.append(f"{endpoint.url}: {type(exc).__name__}: {exc}")
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                continue
            self._release(endpoint)
            return result
        raise ServedError(f"no endpoint answered after {self.retries + 1} attempts (last: {errors[-1]})")

    def close(self) -> None:
        for e in self.endpoints:
            e.client.close()


class ServedBackend:
    """Backend protocol over OpenAI-compatible completions endpoints serving one model."""

    dtype_choice: Any = None  # the server's dtype where it is known (a shared engine, `cai serve`), else None

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        served_name: str | None = None,
        tokenizer: str | None = None,
        name: str | None = None,
        chat: bool = False,
        max_in_flight: int = MAX_IN_FLIGHT,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        backoff: float = BACKOFF_S,
    ) -> None:
        self.pool = Pool(list(endpoints), max_in_flight, timeout, retries, backoff)
        self.served_name = served_name or self._first_model_id()
        self.name = name or self.served_name
        self.chat = chat
        self._tokenizer_path = tokenizer
        self._tokenizer: Any = None
        self._workers = ThreadPoolExecutor(max_workers=max_in_flight * len(self.pool.endpoints))
        self.should_stop: Callable[[], bool] | None = None  # a run's cancel flag, polled while requests run
        self.stop_poll_s = 0.5  # ... at most this often
        self.score_prompts = SCORE_PROMPTS  # prefixes per scoring request (1: one request per log-prob)

    def __repr__(self) -> str:
        return f"ServedBackend({self.name!r}, served_name={self.served_name!r}, endpoints={self.urls})"

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.pool.endpoints]

    def _first_model_id(self) -> str:
        models = self.pool.call(lambda c: c.models.list())
        if not models.data:
            raise ServedError(f"{self.urls[0]} serves no model")
        return str(models.data[0].id)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: the registered folder, else the folder the server reports loading."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = self._tokenizer_path
            if path is None:
                models = self.pool.call(lambda c: c.models.list())
                root = next((getattr(m, "root", None) for m in models.data if m.id == self.served_name), None)
                path = root or self.served_name
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(path)
            except Exception as exc:
                raise ServedError(
                    f"model {self.name!r}: cannot load a tokenizer from {path!r} ({exc}); "
                    "register it with --tokenizer PATH"
                ) from exc
            self._bos = tokens.bos_prefix(self._tokenizer)
        return self._tokenizer

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    # -- the protocol ----------------------------------------------------------------------------

    def render(self, transcript: str) -> str:
        return render_chat(self.tokenizer, transcript) if self.chat else transcript

    def _request(self, params: SamplingParams, index: int) -> dict[str, Any]:
        extra: dict[str, Any] = {"skip_special_tokens": True}
        if params.top_k > 0:
            extra["top_k"] = params.top_k
        # One seed per request: a server seeds each request alone, so equal seeds would mean equal samples.
        # Per-prompt `seeds` win: then a prompt's sample does not depend on the call it was sent in.
        if params.seeds:
            seed: int | None = params.seeds[index]
        else:
            seed = None if params.seed is None else params.seed * 100_003 + index
        return {
            "model": self.served_name,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "stop": [s for s in params.stop if s] or None,
            "extra_body": extra,
        }

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """Completions in prompt order; every prompt is its own streamed request, all in flight together.

        When `should_stop()` turns true, or the caller is interrupted (Ctrl-C), every open stream is cut;
        the prompts then hold the text they had (finish reason "length"), or raise the interruption.
        """
        check_seeds(prompts, params)
        calls = [_Call() for _ in prompts]
        futures: list[Future[Completion]] = []
        try:  # submitting inside: an interruption between two submissions still cuts those sent
            for i, (p, c) in enumerate(zip(prompts, calls, strict=True)):
                futures.append(self._workers.submit(self._generate_one, p, params, i, c))
            self._wait(futures, calls)
        except BaseException:  # KeyboardInterrupt, or a request that failed: stop the others now
            _cut(calls, futures)
            raise
        return [
            f.result() if f.done() and not f.cancelled() else c.partial()
            for f, c in zip(futures, calls, strict=True)
        ]

    def _stopping(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def _wait(self, futures: Sequence[Future[Any]], calls: list[_Call]) -> bool:
        """Until every request is done; polls `should_stop` and cuts every stream once it is true (then True)."""
        pending: set[Future[Any]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=self.stop_poll_s, return_when=FIRST_EXCEPTION)
            for f in done:
                f.result()  # a failed request raises here
            if pending and self._stopping():
                _cut(calls, futures)
                wait(pending, timeout=CANCEL_GRACE_S)
                return True
        return False

    def _generate_one(self, prompt: str, params: SamplingParams, index: int, call: _Call) -> Completion:
        def attempt(client: Any) -> Completion:
            call.reset()
            if call.cancel.is_set():
                return call.partial()

            def take(chunk: Any) -> None:
                if chunk.usage is not None:
                    call.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices or ():
                    call.text += choice.text or ""
                    call.chunks += 1
                    call.finish = choice.finish_reason or call.finish

            if call.stream(lambda: client.completions.create(prompt=prompt, stream=True,
                                                             stream_options={"include_usage": True},
                                                             **self._request(params, index)), take):
                return call.partial()
            if call.finish is None:  # the connection closed before the server said why it stopped
                raise httpx.RemoteProtocolError("the stream ended before its finish reason")
            text, _ = cut_at_stop(call.text, params.stop)
            finish = "length" if call.finish == "length" else "stop"
            prompt_tokens, completion_tokens = call.usage or self._count(prompt, call.text)
            return Completion(text, prompt_tokens, completion_tokens, finish)

        return self.pool.call(attempt)  # type: ignore[no-any-return]

    def _count(self, prompt: str, text: str) -> tuple[int, int]:
        """Token counts for a server that sends no usage in streams."""
        tok = self.tokenizer
        return len(tokens.encode(tok, prompt, self._bos)), len(tok(text, add_special_tokens=False).input_ids)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """The completion as it grows (cumulative text), token by token from the server."""
        chunks = self.pool.call(
            lambda c: c.completions.create(prompt=prompt, stream=True, **self._request(params, 0))
        )
        text = ""
        try:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].text:
                    text += chunk.choices[0].text
                    yield cut_at_stop(text, params.stop)[0]
        finally:
            chunks.close()

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Sum of each option's token log-probs, asking the server only for the tokens the options need.

        Each needed log-prob (a prefix and its next option token) is a 1-token completion restricted
        to that token (`allowed_token_ids`) whose sampled log-prob is the model's raw one; the
        prompt itself is never scored. Prefixes that share the next token go in one request as a list
        of token prompts (`score_prompts` at most), so a comparison's few distinct option tokens make a
        few requests, not one per prompt and token. Every prompt's first token is scored in a wave
        before the rest, so the server's prefix cache holds the prompt when its options' later tokens come.

        When `should_stop()` turns true, or the caller is interrupted (Ctrl-C), every request in flight
        is cut and none is sent after; then `Cancelled` (or the interruption) is raised.
        """
        if len(prompts) != len(options):
            raise ValueError(f"got {len(prompts)} prompts but {len(options)} option lists")
        tok = self.tokenizer
        steps: dict[tuple[int, ...], float] = {}  # prefix + next token -> that token's log-prob
        needs: list[tuple[int, int, list[tuple[int, ...]]]] = []
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            p = tokens.encode(tok, prompt, self._bos)
            for j, option in enumerate(opts):
                rule = tokens.option_tokens(tok, self._bos, prompt, option, p)
                start = len(rule.ids) - rule.n_option
                keys = [tuple(rule.ids[: t + 1]) for t in range(start, len(rule.ids))]
                needs.append((i, j, keys))
                for k in keys:
                    steps.setdefault(k, 0.0)
        first: dict[int, tuple[int, ...]] = {}
        for i, _, keys in needs:
            if keys and i not in first:
                first[i] = keys[0]
        wave0 = list(dict.fromkeys(first.values()))
        for wave in (wave0, [k for k in steps if k not in set(wave0)]):
            if self._stopping():
                raise Cancelled("scoring cancelled before its next requests were sent")
            for group, values in zip(*self._score_wave(wave), strict=True):
                for k, value in zip(group, values, strict=True):
                    steps[k] = value
        scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
        for i, j, keys in needs:
            scores[i][j] = sum(steps[k] for k in keys)
        return scores

    def _score_wave(
        self, keys: list[tuple[int, ...]]
    ) -> tuple[list[list[tuple[int, ...]]], list[list[float]]]:
        """Sends `score_requests(keys)`, all in flight together; the groups and each one's log-probs."""
        groups = score_requests(keys, self.score_prompts)
        calls = [_Call() for _ in groups]
        futures: list[Future[list[float] | None]] = []
        try:  # as in generate: an interruption cuts every request already sent
            for group, call in zip(groups, calls, strict=True):
                futures.append(self._workers.submit(self._step_logprobs, group, call))
            stopped = self._wait(futures, calls)
        except BaseException:
            _cut(calls, futures)
            raise
        finished = [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
        values = [v for v in finished if v is not None]
        if stopped or len(values) < len(groups):  # only a cancel cuts a request
            raise Cancelled(f"scoring cancelled: {len(groups) - len(values)} of {len(groups)} requests cut")
        return groups, values

    def _step_logprobs(self, keys: list[tuple[int, ...]], call: _Call) -> list[float] | None:
        """One streamed request (so a cancel can cut it): each key's prefix as a token prompt, its last
        token the only one allowed. None when cut."""

        def attempt(client: Any) -> dict[int, float] | None:
            if call.cancel.is_set():
                return None
            got: dict[int, float] = {}

            def take(chunk: Any) -> None:
                for choice in chunk.choices or ():
                    if choice.logprobs is not None and choice.logprobs.token_logprobs:
                        got[choice.index] = float(choice.logprobs.token_logprobs[0])

            if call.stream(lambda: client.completions.create(
                    model=self.served_name,
                    prompt=[list(k[:-1]) for k in keys] if len(keys) > 1 else list(keys[0][:-1]),
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=0,
                    stream=True,
                    extra_body={"allowed_token_ids": [keys[0][-1]]},
            ), take):
                return None
            if sorted(got) != list(range(len(keys))):  # e.g. the connection closed early: retried
                raise httpx.RemoteProtocolError(f"asked to score {len(keys)} prompts, the stream gave {len(got)}")
            return got

        got = self.pool.call(attempt)
        return None if got is None else [got[i] for i in range(len(keys))]


@dataclass
class _Call:
    """One streamed request: what it has received, and the handle that cuts it."""

    cancel: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    chunks: int = 0
    finish: str | None = None
    usage: tuple[int, int] | None = None
    _response: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:  # a retried request starts over
        self.text, self.chunks, self.finish, self.usage = "", 0, None, None

    def partial(self) -> Completion:
        return Completion(self.text, 0, self.chunks, "length")

    def stream(self, start: Callable[[], Any], take: Callable[[Any], None]) -> bool:
        """Open a stream with `start()` and hand each chunk to `take` until it ends or a cancel cuts it.
        True when it was cut (then the cut connection's error is ours, not the server's)."""
        chunks = None
        try:
            chunks = start()
            self.open(chunks.response)
            for chunk in chunks:
                if self.cancel.is_set():
                    break
                take(chunk)
        except Exception:
            if not self.cancel.is_set():
                raise
        finally:
            self.close()
            if chunks is not None:
                chunks.close()
        return self.cancel.is_set()

    def open(self, response: Any) -> None:
        with self._lock:
            self._response = response
        if self.cancel.is_set():
            self.cut()

    def close(self) -> None:
        with self._lock:
            self._response = None

    def cut(self) -> None:
        """Stop the request: shut its socket down, which wakes a read blocked on it in another thread."""
        self.cancel.set()
        with self._lock:
            response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _cut(calls: Sequence[_Call], futures: Sequence[Future[Any]]) -> None:
    for f in futures:
        f.cancel()  # not started yet: never sent
    for c in calls:
        c.cut()
