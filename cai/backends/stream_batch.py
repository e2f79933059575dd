"""Concurrent streams to one in-process transformers model, joined into batched `generate` calls.

Each caller (an arena side, a Models-tab chat) hands its prompt's token ids to the model's `StreamBatcher`
and reads its own generated token ids back as they come. One worker thread per model takes the first waiting
request, collects whatever else arrives within `window_s` (up to `max_batch`), left-pads the prompts and runs
one `generate` for all of them (static batching: a request that arrives mid-generation waits for the next
call; a served engine batches continuously). A stopping criterion hands each row's new token to its caller
at every step and ends the row on its own terms: an end-of-turn token, its own `max_new_tokens`, one of its
own stop strings, or its caller going away (the page closed), while the other rows go on.

Sampling: a row with temperature 0 is greedy; a sampling row draws with its own `torch.Generator` seeded
from its request's `seed` (`RowSampler`), so a seeded answer is the same whichever requests share its batch.
Greedy rows are as left-padded batched greedy decoding gives them (tests compare them with batch 1).
The worker holds the model's pool lock during `generate`, so anything else taking that lock still waits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria

from cai.backends.base import SamplingParams

WINDOW_S = 0.02  # how long the worker waits for more requests after the first one
MAX_BATCH = 32  # rows per generate call
WAIT_S = 600.0  # a caller waits at most this long for its next tokens (a loaded machine, a long batch ahead)


@dataclass(eq=False)
class Request:
    """One caller's generation: its prompt ids and params, and the queue its tokens go to
    (lists of ids; None at the end; an exception if the batch failed)."""

    prompt_ids: list[int]
    params: SamplingParams
    out: queue.Queue[list[int] | BaseException | None] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    done: bool = False

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.out.put(None)


class RowSampler(LogitsProcessor):
    """Per row: greedy rows keep their scores; a sampling row is warped by its own temperature/top-k/top-p
    and draws with its own generator, leaving only the drawn token open (the call runs greedy)."""

    def __init__(self, requests: Sequence[Request], device: Any) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.rows: list[tuple[int, list[Any], torch.Generator]] = []
        for r, req in enumerate(requests):
            p = req.params
            if p.temperature <= 0:
                continue
            warpers: list[Any] = [TemperatureLogitsWarper(p.temperature)]
            if p.top_k > 0:
                warpers.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                warpers.append(TopPLogitsWarper(p.top_p))
            gen = torch.Generator(device=device)
            if p.seed is not None:
                gen.manual_seed(int(p.seed))
            else:
                gen.seed()
            self.rows.append((r, warpers, gen))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:  # type: ignore[override]
        for r, warpers, gen in self.rows:
            row = scores[r : r + 1]
            for warp in warpers:
                row = warp(input_ids[r : r + 1], row)
            drawn = int(torch.multinomial(torch.softmax(row.float(), dim=-1)[0], 1, generator=gen))
            scores[r] = float("-inf")
            scores[r, drawn] = 0.0
        return scores


class RowRouter(StoppingCriteria):
    """After each step: hand every live row's new token to its caller and end the rows that are done."""

    def __init__(self, requests: Sequence[Request], tokenizer: Any, eos: set[int]) -> None:
        self.requests, self.tokenizer, self.eos = list(requests), tokenizer, eos

    def _hit_stop(self, req: Request) -> bool:
        stops = [s for s in req.params.stop if s]
        if not stops:
            return False
        window = 4 * max(len(s.encode()) for s in stops) + 4  # a token spells at least one byte
        text = self.tokenizer.decode(req.generated[-window:], skip_special_tokens=True)
        return any(s in text for s in stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:  # type: ignore[override]
        last = input_ids[:, -1].tolist()
        for req, token in zip(self.requests, last, strict=True):
            if req.done:
                continue
            if req.cancelled.is_set() or token in self.eos:
                req.finish()
                continue
            req.generated.append(token)
            req.out.put([token])
            if len(req.generated) >= req.params.max_new_tokens or self._hit_stop(req):
                req.finish()
        done = [req.done for req in self.requests]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class StreamBatcher:
    """The joining queue of one loaded transformers backend (`.model`, `.tokenizer`); see the module doc.

    `generate_calls` and `rows` count the `generate` calls made and the requests they served."""

    def __init__(self, backend: Any, lock: threading.Lock, eos: set[int], *, window_s: float = WINDOW_S,
                 max_batch: int = MAX_BATCH) -> None:
        self.backend, self.lock, self.eos = backend, lock, set(eos)
        self.window_s, self.max_batch = window_s, max_batch
        self.generate_calls = self.rows = 0
        self._waiting: queue.Queue[Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_guard = threading.Lock()

    def stream_ids(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[list[int]]:
        """The generated token ids, in pieces as they come; closing the iterator cancels the request
        (its row ends at the next step, the other rows go on)."""
        req = Request(list(prompt_ids), params)
        self._ensure_worker()
        self._waiting.put(req)
        try:
            while True:
                try:
                    item = req.out.get(timeout=WAIT_S)
                except queue.Empty:
                    raise TimeoutError(f"no tokens from {self.backend.name} in {WAIT_S:.0f} s") from None
                ids: list[int] = []
                while True:  # take everything already there: a slow reader catches up in one piece
                    if item is None or isinstance(item, BaseException):
                        break
                    ids.extend(item)
                    try:
                        item = req.out.get_nowait()
                    except queue.Empty:
                        item = []
                        break
                if ids:
                    yield ids
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
        finally:
            req.cancelled.set()

    def _ensure_worker(self) -> None:
        with self._start_guard:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name=f"batch-{self.backend.name}", daemon=True)
                self._worker.start()

    def _collect(self) -> list[Request]:
        batch = [self._waiting.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._waiting.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        live = []
        for req in batch:
            if req.cancelled.is_set():
                req.finish()
            else:
                live.append(req)
        return live

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if not batch:
                continue
            try:
                self._generate(batch)
            except BaseException as exc:  # handed to every caller of the batch; the worker goes on
                for req in batch:
                    if not req.done:
                        req.done = True
                        req.out.put(exc)
            for req in batch:  # a row the model ended without our criterion (max length) ends here
                req.finish()

    @torch.inference_mode()
    def _generate(self, batch: list[Request]) -> None:
        tok, model = self.backend.tokenizer, self.backend.model
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch],
                            device=model.device)
        config = GenerationConfig(
            max_new_tokens=max(r.params.max_new_tokens for r in batch), do_sample=False,
            eos_token_id=sorted(self.eos) or None, pad_token_id=pad, bos_token_id=tok.bos_token_id,
        )
        processors = LogitsProcessorList()
        if any(r.params.temperature > 0 for r in batch):
            processors.append(RowSampler(batch, model.device))
        with self.lock:
            self.generate_calls += 1
            self.rows += len(batch)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                           stopping_criteria=[RowRouter(batch, tok, self.eos)], logits_processor=processors)
