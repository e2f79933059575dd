"""AI feedback: response pairs from a policy, then soft preference labels from a feedback model.

A label is the normalised probability of the options "(A)" and "(B)" read from log-probs after a
multiple-choice comparison prompt, averaged over option orders, principles and (chain-of-thought)
samples; every reading is kept so the label can be audited. All model calls are batched through
the `Backend` protocol, and runs store pairs and labels keyed so that a resumed run skips them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cai import prompts
from cai.backends.base import Backend, SamplingParams
from cai.config import FromConfig
from cai.evals import consistency

OPTIONS = prompts.OPTIONS
ORDERS = ("AB", "BA")  # AB: the first response is shown as (A); BA: it is shown as (B)


# ----------------------------------------------------------------------------- the label math
def option_p(logp_a: float, logp_b: float) -> float:
    """p(option A) from the two options' log-probs, normalised over the two: sigmoid(lp_A - lp_B)."""
    d = logp_a - logp_b
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def first_p(p_option_a: float, order: str) -> float:
    """p(first response better) from p(option A): the first response is option A in order AB, B in BA."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return p_option_a if order == "AB" else 1.0 - p_option_a


def order_average(p_ab: float, p_ba: float) -> float:
    """p(first better) from both orders, each given as p(option A): cancels a constant position bias."""
    return (first_p(p_ab, "AB") + first_p(p_ba, "BA")) / 2.0


def clamp(p: float, low: float, high: float) -> float:
    """Limit a chain-of-thought label to [low, high]: CoT makes a small model's p near 0 or 1."""
    if low > high:
        raise ValueError(f"clamp bounds reversed: {low} > {high}")
    return min(max(p, low), high)


def ensemble(ps: Sequence[float]) -> float:
    """The mean of several readings (principles, orders, samples) of the same pair."""
    if not ps:
        raise ValueError("cannot ensemble zero readings")
    return sum(ps) / len(ps)


def draw_principles(principles: Sequence[str], k: int, seed: int | str) -> list[int]:
    """Indices of k principles for one pair, seeded per pair so a resumed run draws the same ones.

    Without replacement while k <= the number of principles, with replacement beyond.
    """
    if not principles:
        raise ValueError("no comparison principles to draw from")
    rng = random.Random(str(seed))
    n = len(principles)
    return rng.sample(range(n), k) if k <= n else [rng.randrange(n) for _ in range(k)]


def to_preference(
    prompt: str, response_a: str, response_b: str, p: float, meta: dict[str, Any]
) -> dict[str, Any]:
    """A pair for `cai.data.create_pref_set`: chosen = the response with p >= 0.5, p = its probability."""
    if p >= 0.5:
        return {"prompt": prompt, "chosen": response_a, "rejected": response_b, "p": p, "meta": meta}
    return {"prompt": prompt, "chosen": response_b, "rejected": response_a, "p": 1.0 - p, "meta": meta}


# ----------------------------------------------------------------------------- readings
@dataclass
class LabelOptions(FromConfig):
    """How to read labels: principles per pair, option orders, chain of thought, clamping, batching."""

    ensemble: int = 1
    both_orders: bool = True
    few_shot: int = 0
    cot: bool = False
    cot_samples: int = 1
    cot_temperature: float = 1.0
    clamp_low: float = 0.4
    clamp_high: float = 0.6
    max_new_tokens: int = 128
    batch_size: int = 8
    seed: int = 0

    @property
    def orders(self) -> tuple[str, ...]:
        return ORDERS if self.both_orders else ORDERS[:1]

    @property
    def samples(self) -> int:
        return self.cot_samples if self.cot else 1


@dataclass
class Query:
    """One multiple-choice reading to take: `text` ends where the answer (or the CoT) begins."""

    item: int  # index of the item (pair) it belongs to
    text: str
    order: str = "AB"
    principle: str = ""
    sample: int = 0


@dataclass
class Reading:
    """The outcome of one query: raw option log-probs, the CoT text, p(option A) and p(first better)."""

    item: int
    order: str
    principle: str
    sample: int
    logprobs: list[float]
    p_option_a: float
    p: float  # p(first response better), clamped when CoT
    cot: str | None = None
    cot_tokens: int = 0


@dataclass
class Label:
    """A pair's soft label: p(first response better) and every reading it averages."""

    p: float
    readings: list[Reading] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        rs = [asdict(r) for r in self.readings]
        for r in rs:
            r.pop("item")
        return {"p": self.p, "principles": principles_of(self.readings), "readings": rs}


def principles_of(readings: Sequence[Reading]) -> list[str]:
    seen: list[str] = []
    for r in readings:
        if r.principle not in seen:
            seen.append(r.principle)
    return seen


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_queries(
    backend: Backend,
    queries: Sequence[Query],
    opts: LabelOptions,
    *,
    on_phase: Callable[[str], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Reading]:
    """Take every query's reading, batched: CoT generation first (when asked), then option log-probs.

    `on_phase(part)` runs before each backend call ("chain of thought" or "option log-probs"), and
    `on_batch(queries, tokens)` after it: a run reports step progress and checks cancel there.

    With `opts.cot` each query text ends in "Let's think step by step:"; the model's reasoning and
    "So the answer is:" are appended before the options are read. The two orders of a pair sit next
    to each other in a batch, so a backend with prefix caching computes their shared conversation once.
    """
    texts = [q.text for q in queries]
    cots: list[str | None] = [None] * len(queries)
    cot_tokens = [0] * len(queries)
    if opts.cot:
        sampled = opts.samples > 1
        for start in range(0, len(queries), opts.batch_size):
            chunk = queries[start : start + opts.batch_size]
            params = SamplingParams(
                max_new_tokens=opts.max_new_tokens,
                temperature=opts.cot_temperature if sampled else 0.0,
                seed=opts.seed + start,
                stop=prompts.COT_STOP,
            )
            if on_phase:
                on_phase("chain of thought")
            outs = backend.generate([q.text for q in chunk], params)
            for j, out in enumerate(outs):
                cots[start + j] = out.text.strip()
                cot_tokens[start + j] = out.completion_tokens
                texts[start + j] = prompts.comparison_cot_answer_prompt(chunk[j].text, out.text)
            if on_batch:
                on_batch(len(chunk), sum(o.completion_tokens for o in outs))
    readings: list[Reading] = []
    for start in range(0, len(queries), opts.batch_size):
        chunk_texts = texts[start : start + opts.batch_size]
        if on_phase:
            on_phase("option log-probs")
        lps = backend.option_logprobs(chunk_texts, [list(OPTIONS)] * len(chunk_texts))
        for j, lp in enumerate(lps):
            q = queries[start + j]
            pa = option_p(lp[0], lp[1])
            p = first_p(pa, q.order)
            if opts.cot:
                p = clamp(p, opts.clamp_low, opts.clamp_high)
            readings.append(
                Reading(
                    q.item,
                    q.order,
                    q.principle,
                    q.sample,
                    list(lp),
                    pa,
                    p,
                    cots[start + j],
                    cot_tokens[start + j],
                )
            )
        if on_batch:
            on_batch(len(chunk_texts), 0)
    return readings


def combine(readings: Sequence[Reading], n_items: int) -> list[Label]:
    """Average each item's readings into its label (over principles, orders and samples alike)."""
    per: list[list[Reading]] = [[] for _ in range(n_items)]
    for r in readings:
        per[r.item].append(r)
    return [Label(ensemble([r.p for r in rs]), rs) for rs in per]


# ----------------------------------------------------------------------------- labelling pairs
@dataclass
class PairItem:
    """A conversation and two responses to compare; `key` seeds its principle draw."""

    key: int | str
    prompt: str
    response_a: str
    response_b: str


def comparison_principles(version: dict[str, Any], names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The enabled comparison principles of a constitution version, optionally only those named."""
    found = [p for p in version["principles"] if p["kind"] == "comparison" and p["enabled"]]
    if names:
        by_name = {p["name"]: p for p in version["principles"] if p["kind"] == "comparison"}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(
                f"no comparison principle named {', '.join(map(repr, missing))} in this constitution"
            )
        found = [by_name[n] for n in names]
    if not found:
        raise ValueError(
            f"constitution {version['name']!r} v{version['version']} has no enabled comparison principle"
        )
    return found


def comparison_exemplars(version: dict[str, Any], n: int, cot: bool) -> list[Any]:
    """The first n few-shot comparison exemplars (chain-of-thought ones for CoT)."""
    kind = "comparison_cot" if cot else "comparison"
    return [
        e["data"] for e in sorted(version["exemplars"], key=lambda e: e["position"]) if e["kind"] == kind
    ][:n]


def pair_queries(
    items: Sequence[PairItem],
    principles: Sequence[dict[str, Any]],
    exemplars: Sequence[Any],
    opts: LabelOptions,
) -> list[Query]:
    """Every reading the options ask for: k principles (seeded per pair) x orders x CoT samples."""
    render = prompts.comparison_cot_prompt if opts.cot else prompts.comparison_prompt
    queries = []
    for i, it in enumerate(items):
        for idx in draw_principles([p["name"] for p in principles], opts.ensemble, f"{opts.seed}:{it.key}"):
            pr = principles[idx]
            for order in opts.orders:
                first, second = (
                    (it.response_a, it.response_b) if order == "AB" else (it.response_b, it.response_a)
                )
                text = render(it.prompt, pr, first, second, exemplars)
                queries += [Query(i, text, order, pr["name"], s) for s in range(opts.samples)]
    return queries


def label_pairs(
    backend: Backend,
    items: Sequence[PairItem],
    principles: Sequence[dict[str, Any]],
    opts: LabelOptions,
    exemplars: Sequence[Any] = (),
    on_phase: Callable[[str], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Label]:
    """Soft labels p(response_a better) for a batch of pairs, each with all of its readings."""
    queries = pair_queries(items, principles, exemplars, opts)
    return combine(read_queries(backend, queries, opts, on_phase=on_phase, on_batch=on_batch), len(items))


def readings_per_pair(opts: LabelOptions) -> int:
    """Queries one pair takes (principles x orders x samples); twice that with CoT (a generation, then a read)."""
    return opts.ensemble * len(opts.orders) * opts.samples * (2 if opts.cot else 1)


def span(first: int, size: int, total: int, noun: str = "pairs") -> str:
    """ "pairs 1-8 of 20" (or "pair 3 of 20"): which items a batch covers, for a run's phase."""
    what = f"{noun[:-1]} {first}" if size == 1 else f"{noun} {first}-{first + size - 1}"
    return f"{what} of {total}"


def consistency_fields(label: Label, band: float, inconsistent: str) -> dict[str, Any]:
    """A feedback_labels row's p, consistent and meta: whether both orders pick the same response
    (overall and per principle, see cai.evals.consistency), p = 0.5 under "tie" when they do not."""
    from cai import store

    flag, per = consistency.readings_consistency(label.readings, band)
    meta = {**label.meta(), "p_order_average": label.p, "consistent_by_principle": per}
    return {
        "p": consistency.resolve(label.p, flag, inconsistent),
        "consistent": None if flag is None else int(flag),
        "meta": store.dumps(meta),
    }
