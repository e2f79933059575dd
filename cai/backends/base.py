"""The model backend protocol: batch-first generation and option scoring, nothing else.

Every stage talks to a model through these two calls, so transformers, vLLM and the scripted
test backend are interchangeable. Prompts arrive fully rendered (see `Backend.render`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cai.transcript import HUMAN, parse_hh

HUMAN_STOP = HUMAN  # generation stops where the next human turn would begin


class Cancelled(Exception):
    """A backend call stopped because its `should_stop` flag turned true (a run's cancel), with no result
    to give (scoring; a cancelled generation returns the text it had instead)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 means greedy.

    `seed` seeds a call; `seeds` (one per prompt, see `sample_seed`) seeds each prompt's sample alone, so
    a prompt's text depends on its own seed only, not on the batch it was sent in nor on the backend's
    batching: the way to draw k different samples of one prompt that a resumed run draws again.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = (HUMAN_STOP,)
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_seed(seed: int, *key: object) -> int:
    """A 31-bit seed for one sample, from the run's seed and what names the sample (e.g. step, prompt id,
    sample index): stable across processes and Python versions (no `hash()`)."""
    text = ":".join(str(k) for k in (seed, *key))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def check_seeds(prompts: Sequence[str], params: SamplingParams) -> None:
    if params.seeds and len(params.seeds) != len(prompts):
        raise ValueError(f"got {len(params.seeds)} seeds for {len(prompts)} prompts")


@dataclass(frozen=True)
class Completion:
    """One generated continuation, cut before the first stop string."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop string or EOS) | "length" (hit max_new_tokens)


@runtime_checkable
class Backend(Protocol):
    name: str
    chat: bool  # True: render conversations with the tokenizer's chat template

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]: ...

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Sum of token log-probs of each option as a continuation of its prompt."""
        ...

    def render(self, transcript: str) -> str:
        """An HH transcript ("\\n\\nHuman: ...\\n\\nAssistant:") as this model's prompt text."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def render_chat(tokenizer, transcript: str) -> str:  # type: ignore[no-untyped-def]
    """Render an HH transcript through a chat template, ending ready for the assistant's turn."""
    messages = parse_hh(transcript)
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages = messages[:-1]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class ScriptedBackend:
    """A backend that answers from a script: for tests of control flow, no weights anywhere.

    `respond(prompt) -> str` gives each completion (the backend applies stop strings and
    max_new_tokens counted in whitespace tokens); `score(prompt, option) -> float` gives each
    option's log-prob. Every call is recorded in `calls` so tests can assert the exact texts sent.
    """

    respond: Callable[[str], str] = lambda prompt: " OK"
    score: Callable[[str, str], float] = lambda prompt, option: -1.0
    name: str = "scripted"
    chat: bool = False
    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        self.calls.append(("generate", list(prompts)))
        out = []
        for prompt in prompts:
            text, stopped = cut_at_stop(self.respond(prompt), params.stop)
            words = text.split(" ")
            finish = "stop"
            if len(words) > params.max_new_tokens:
                text, finish = " ".join(words[: params.max_new_tokens]), "length"
            out.append(Completion(text, len(prompt.split()), len(text.split()), finish))
        return out

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        self.calls.append(("option_logprobs", list(prompts)))
        return [[self.score(p, o) for o in opts] for p, opts in zip(prompts, options, strict=True)]

    def render(self, transcript: str) -> str:
        return transcript
