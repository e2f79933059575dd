"""SL-CAI chains: initial response, then N rounds of critique and revision, batch by batch.

The engine advances a group of chains one step at a time (all initial responses, then all round-1
critiques, ...), each step in backend calls of `batch_size` prompts. Each step is stored as soon as its call
returns (`store_partial`), and a finished chain moves with all its steps into chains/chain_steps in one
transaction; a killed or cancelled run resumes by skipping stored chains and continuing the partial ones.
"""

from __future__ import annotations

import difflib
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlite_utils import Database

from cai import prompts as P
from cai import store
from cai.backends.base import HUMAN_STOP, Backend, Completion, SamplingParams, sample_seed
from cai.config import FromConfig
from cai.data import chain_records

INITIAL_STOP = (HUMAN_STOP, "\n\nCritiqueRequest:", "\n\nRevisionRequest:")
MODES = ("critique", "direct", "helpful")


class SLError(ValueError):
    """The SL stage cannot run as configured (no principles, clashing prompt sets, ...)."""


@dataclass(frozen=True)
class ChainItem:
    """One chain to build: a stored prompt (HH transcript ending in "\\n\\nAssistant:") and a sample index."""

    prompt_id: int
    prompt: str
    sample: int = 0
    mode: str = "critique"  # critique | direct | helpful
    slot: int = 0  # position among the run's critique chains (plan order): its place in a stratified schedule


@dataclass
class Step:
    kind: str  # initial | critique | revision
    round: int  # 0 for the initial response, k for critique/revision k
    principle: str  # principle name ("" for the initial response)
    sent: str  # the exact text sent to the backend
    output: str  # the backend's text as returned (cut at a stop string)
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # this step's share of its batch's wall time
    flags: list[str] = field(default_factory=list)


@dataclass
class Chain:
    item: ChainItem
    principles: list[str]
    steps: list[Step] = field(default_factory=list)

    @property
    def response(self) -> str:
        """The latest response: the last revision, or the initial response."""
        last = next(s for s in reversed(self.steps) if s.kind in ("initial", "revision"))
        return last.output.strip()

    @property
    def flags(self) -> list[str]:
        return sorted({f"{s.kind}{s.round or ''}:{f}" for s in self.steps for f in s.flags})


@dataclass(frozen=True)
class ChainOptions(FromConfig):
    """The engine's knobs; a stage derives them from its config by field name (`from_config`)."""

    revisions: int = 4
    few_shot: int = 2
    batch_size: int = 8
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    principles: str = ""  # draw only these critique principles (comma-separated names); "" = every enabled one
    stratified: bool = False  # draw each principle equally often over the run (seeded schedule), not independently
    num_principles: int | None = None  # draw only from the first N of those principles (Fig. 6); None = all


# ----------------------------------------------------------------------------- pure pieces


def critique_principles(principles: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The enabled critique/revision principles of a constitution version, in position order."""
    pool = [p for p in principles if p["kind"] == "critique" and p["enabled"]]
    return sorted(pool, key=lambda p: p["position"])


def names_list(text: str) -> list[str]:
    """"harm, kind" -> ["harm", "kind"] (a config's comma-separated principle names)."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def select_principles(pool: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Mapping[str, Any]]:
    """The pool restricted to `names` (all of it for none), in pool order; an unknown name is a clear error."""
    if not names:
        return list(pool)
    known = [str(p["name"]) for p in pool]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SLError(f"principles: {', '.join(unknown)} not among the enabled critique principles "
                      f"({', '.join(known) or 'none'})")
    return [p for p in pool if p["name"] in names]


def first_principles(pool: Sequence[Mapping[str, Any]], n: int | None) -> list[Mapping[str, Any]]:
    """The first `n` principles of the pool in position order (all for None): the paper's Fig. 6 varies how many
    principles the chains draw from; nested sets (1 of 4 of 16) keep the comparison about the number alone."""
    if n is None:
        return list(pool)
    if n > len(pool):
        raise SLError(f"num_principles: {n}, but the constitution version has only {len(pool)} enabled "
                      "critique principles (to draw from)")
    return list(pool[:n])


def stratified_index(slot: int, rnd: int, rounds: int, n: int, seed: int) -> int:
    """The pool index of round `rnd` of the chain at `slot` under a stratified schedule: the run's draws, chain
    by chain, walk through seeded permutations of the pool, so after k * n draws each principle was drawn k
    times (and never more than once more than another). Pure in (slot, round, seed): resume draws the same."""
    k = slot * rounds + rnd
    cycle, pos = divmod(k, n)
    return random.Random(f"sl-stratified:{seed}:{cycle}").sample(range(n), n)[pos]


def draw_principles(
    pool: Sequence[Mapping[str, Any]], rounds: int, seed: int, prompt_id: int, sample: int = 0,
    slot: int | None = None,
) -> list[Mapping[str, Any]]:
    """One principle per round, drawn with replacement; the same (seed, prompt, sample) gives the same draws.
    With `slot` (stratified), round r takes the schedule's entry for (slot, r) instead of a random choice.

    Seeding per chain (not per run) keeps the draws of a resumed run identical to an uninterrupted one.
    """
    if rounds and not pool:
        raise SLError("the constitution version has no enabled critique principles")
    rng = random.Random(f"sl:{seed}:{prompt_id}:{sample}")
    drawn = []
    for rnd in range(rounds):
        principle = rng.choice(pool)
        if slot is not None:
            principle = pool[stratified_index(slot, rnd, rounds, len(pool), seed)]
        alternatives = principle.get("alternatives") or []
        if isinstance(alternatives, str):
            alternatives = store.loads(alternatives, [])
        if alternatives:  # a paper entry with several critique requests for one revision request
            principle = {**principle, "critique": rng.choice([principle["critique"], *alternatives])}
        drawn.append(principle)
    return drawn


def degenerate_flags(text: str, finish_reason: str = "stop", exemplars: str = "", context: str | None = None) -> list[str]:
    """Flags for an output that is unusable as is (FLAG_MEANINGS says each in words): empty, repeated (loops),
    copied (parrots the few-shot exemplars instead of answering this conversation), truncated (hit the token
    limit). `context` is the conversation and current response the step was about (None: not known)."""
    flags = []
    body = text.strip()
    if not body:
        flags.append("empty")
    elif _repetitive(text):
        flags.append("repeated")
    if (len(body) >= COPY_MIN_CHARS and body in exemplars) or (
        exemplars and copied_share(body, exemplars, context or "") >= COPY_THRESHOLD
    ) or (context is not None and ignores_prompt(body, context, exemplars)):
        flags.append("copied")
    if finish_reason == "length":
        flags.append("truncated")
    return flags


COPY_MIN_CHARS = 20
# "unchanged": a step whose words match the step before it (or, for a revision, the response it revises) this
# closely (difflib's ratio over lower-cased words) is a copy, not a critique or a revision.
UNCHANGED_RATIO = 0.9
# "copied": at least COPY_THRESHOLD of the output's word COPY_NGRAM-grams occur in the exemplars (but not
# in the conversation itself, so quoting the user is fine), counted once the output has MIN_GRAMS of them.
COPY_NGRAM, COPY_THRESHOLD, MIN_GRAMS = 4, 0.3, 3
# ... or the output shares no content word with the conversation while most of its content words come
# from the exemplars (a critique of someone else's conversation), once it has IGNORE_MIN_WORDS of them.
IGNORE_MIN_WORDS = 6
FLAG_MEANINGS = {
    "empty": "the model wrote nothing",
    "repeated": "the output loops: a line 3+ times, or under half its word triples distinct",
    "copied": (f"the output parrots the few-shot exemplars: ≥{COPY_THRESHOLD:.0%} of its {COPY_NGRAM}-word runs "
               "come from them, or it never mentions this conversation while echoing them"),
    "truncated": "the output hit the token limit (max_new_tokens) and may be cut mid-sentence",
    "unchanged": (f"the step repeats the step before it verbatim or nearly so (≥{UNCHANGED_RATIO:.0%} of its words "
                  "in order): a critique that restates the response, a revision that restates the critique "
                  "or the response it was to revise"),
}
_STOP = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her him his how i if in "
    "into is it its just may me might more most my no not of on or our out she should so some than that the "
    "their them then there these they this those to too up us very was we were what when where which who why "
    "will with would you your yours about also any because being both each get got here only other over own "
    "same such what's it's that's don't can't won't i'm you're assistant human critique revision request".split()
)


def repeats(text: str, before: str) -> bool:
    """True when `text` repeats `before` verbatim or nearly so: the same words (case and punctuation aside), or
    at least UNCHANGED_RATIO of them in the same order. An empty text repeats nothing (it is flagged empty)."""
    a, b = _words(text), _words(before)
    if not a or not b:
        return False
    return a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= UNCHANGED_RATIO


def unchanged_flag(kind: str, output: str, response: str, critique: str | None) -> list[str]:
    """["unchanged"] when a critique repeats the response it critiques, or a revision repeats its critique or
    the response it was to revise; else []."""
    earlier = [response] if kind == "critique" else [response, critique or ""] if kind == "revision" else []
    return ["unchanged"] if any(repeats(output, e) for e in earlier) else []


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copied_share(text: str, exemplars: str, context: str = "", n: int = COPY_NGRAM) -> float:
    """Share of `text`'s word n-grams found in `exemplars` and not in `context` (0 for a very short text)."""
    grams = _grams(_words(text), n)
    if len(grams) < MIN_GRAMS:
        return 0.0
    borrowed = _grams(_words(exemplars), n) - _grams(_words(context), n)
    return len(grams & borrowed) / len(grams)


def ignores_prompt(text: str, context: str, exemplars: str) -> bool:
    """True when `text` talks about the exemplars' conversations, not this one: none of its content words
    occur in `context`, and at least half of them occur in the exemplars."""
    content = {w for w in _words(text) if len(w) >= 4 and w not in _STOP}
    if len(content) < IGNORE_MIN_WORDS:
        return False
    if content & set(_words(context)):
        return False
    return len(content & set(_words(exemplars))) * 2 >= len(content)


def _repetitive(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and max(lines.count(line) for line in lines) >= 3:
        return True
    words = text.split()
    grams = list(zip(words, words[1:], words[2:], strict=False))
    return len(grams) >= 10 and len(set(grams)) / len(grams) < 0.5


def fewshot_conversations(exemplars: Sequence[Any]) -> str:
    """Few-shot Human/Assistant turns for a base policy: each critique exemplar's conversation, no critique."""
    out = []
    for e in exemplars:
        text = P.critique_exemplar_block([e])
        cut = text.find("\n\nCritiqueRequest:")
        out.append(text[:cut] if cut >= 0 else text)
    return "".join(out)


def initial_text(backend: Backend, prompt: str, fewshot: str) -> str:
    """What the policy sees for its first response: few-shot HH turns + the prompt (base), or its chat form."""
    return backend.render(prompt) if backend.chat else fewshot + prompt


def as_sent(backend: Backend, text: str) -> str:
    """Critique and revision requests go to chat models as one human turn; base models get them raw."""
    if not backend.chat:
        return text
    return backend.render(f"{P.HUMAN} {text.strip()}{P.ASSISTANT}")


# ----------------------------------------------------------------------------- the engine


def generate_batched(
    backend: Backend,
    texts: Sequence[str],
    params: SamplingParams,
    batch_size: int,
    on_batch: Callable[[list[Completion]], None] | None = None,
) -> list[tuple[Completion, float]]:
    """Completions for `texts`, sent `batch_size` at a time; each with its share of the batch's time.
    Per-prompt `params.seeds` go with their prompts."""
    out: list[tuple[Completion, float]] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        chunk = replace(params, seeds=params.seeds[start : start + batch_size]) if params.seeds else params
        t0 = time.perf_counter()
        completions = backend.generate(batch, chunk)
        share = (time.perf_counter() - t0) / len(batch)
        if len(completions) != len(batch):
            raise RuntimeError(f"backend returned {len(completions)} completions for {len(batch)} prompts")
        out += [(c, share) for c in completions]
        if on_batch:
            on_batch(completions)
    return out


def run_chains(
    backend: Backend,
    items: Sequence[ChainItem],
    principles: Sequence[Mapping[str, Any]],
    exemplars: Sequence[Any],
    opts: ChainOptions,
    on_batch: Callable[[list[Completion]], None] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
    stored: Mapping[tuple[int, int], Sequence[Step]] | None = None,
    on_steps: Callable[[list[Chain]], None] | None = None,
) -> list[Chain]:
    """Build the chains of `items`, step by step across all of them (batched); `on_step(kind, round, n_prompts)`
    runs before each step, then after each backend call `on_steps(chains)` (each chain's last step is new: store
    it) and `on_batch(completions)` (progress; it may raise to cancel, after the steps were handed on).

    `stored`: steps already made, by (prompt id, sample) (a resumed run); those chains continue after them.
    Helpful items get only the initial response; direct items get revisions without critiques.
    """
    pool = first_principles(select_principles(critique_principles(principles), names_list(opts.principles)),
                            opts.num_principles)
    shots = list(exemplars)[: opts.few_shot]
    fewshot = fewshot_conversations(shots)
    shot_text = P.critique_exemplar_block(shots)
    chains = []
    for it in items:
        if it.mode not in MODES:
            raise SLError(f"unknown chain mode {it.mode!r}")
        rounds = 0 if it.mode == "helpful" else opts.revisions
        drawn = draw_principles(pool, rounds, opts.seed, it.prompt_id, it.sample,
                                it.slot if opts.stratified else None)
        done = list((stored or {}).get((it.prompt_id, it.sample), ()))
        chains.append((Chain(it, [str(p["name"]) for p in drawn], done), drawn))

    def params(stop: tuple[str, ...], step: int, group: list[tuple[Chain, list[Any]]]) -> SamplingParams:
        # One seed per (step, prompt, sample): a chain's text does not depend on the batch it was sent in,
        # and the k samples of a prompt differ (one seed per chunk made them copies at batch size 1).
        seeds = tuple(sample_seed(opts.seed, "sl", step, c.item.prompt_id, c.item.sample) for c, _ in group)
        return SamplingParams(
            max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, seed=opts.seed * 1000 + step, stop=stop,
            seeds=seeds,
        )

    def run_step(group: list[tuple[Chain, list[Any]]], kind: str, rnd: int,
                 text_of: Callable[[Chain, list[Any]], str], stop: tuple[str, ...]) -> None:
        group = [g for g in group if find_step(g[0], kind, rnd) is None]  # a resumed chain may have it
        if not group:
            return
        texts = [text_of(c, d) for c, d in group]
        if on_step:
            on_step(kind, rnd, len(texts))
        for start in range(0, len(group), opts.batch_size):
            part = group[start : start + opts.batch_size]
            sampling = params(stop, 2 * rnd + (kind == "revision"), part)
            results = generate_batched(backend, texts[start : start + opts.batch_size], sampling, opts.batch_size)
            for (chain, drawn), text, (comp, secs) in zip(part, texts[start:], results, strict=False):
                name = str(drawn[rnd - 1]["name"]) if rnd else ""
                context = chain.item.prompt + ("\n" + chain.response if chain.steps else "")
                flags = degenerate_flags(comp.text, comp.finish_reason, shot_text, context)
                if chain.steps:
                    critique = chain.steps[-1].output if chain.steps[-1].kind == "critique" else None
                    flags += unchanged_flag(kind, comp.text, chain.response, critique)
                chain.steps.append(
                    Step(kind, rnd, name, text, comp.text, comp.prompt_tokens, comp.completion_tokens, round(secs, 4),
                         flags)
                )
            if on_steps:
                on_steps([c for c, _ in part])
            if on_batch:
                on_batch([comp for comp, _ in results])

    run_step(chains, "initial", 0, lambda c, d: initial_text(backend, c.item.prompt, fewshot), INITIAL_STOP)
    for rnd in range(1, opts.revisions + 1):
        group = [(c, d) for c, d in chains if c.item.mode != "helpful"]
        if not group:
            break

        def critique_text(c: Chain, d: list[Any], rnd: int = rnd) -> str:
            return as_sent(backend, P.critique_prompt(c.item.prompt, c.response, d[rnd - 1], shots))

        def revision_text(c: Chain, d: list[Any], rnd: int = rnd) -> str:
            crit = find_step(c, "critique", rnd)
            critique = crit.output if c.item.mode == "critique" and crit else None
            return as_sent(backend, P.revision_prompt(c.item.prompt, c.response, d[rnd - 1], critique, shots))

        run_step([g for g in group if g[0].item.mode == "critique"], "critique", rnd, critique_text, P.CRITIQUE_STOP)
        run_step(group, "revision", rnd, revision_text, P.REVISION_STOP)
    return [c for c, _ in chains]


def find_step(chain: Chain, kind: str, rnd: int) -> Step | None:
    return next((s for s in chain.steps if s.kind == kind and s.round == rnd), None)


# ----------------------------------------------------------------------------- storage


def store_chain(
    db: Database, run_id: int, chain: Chain, *, model_id: int | None, constitution_version_id: int | None
) -> int | None:
    """Write a chain and its steps in one transaction; returns its id, or None if the run already has it."""
    it = chain.item
    if db.table("chains").count_where("run_id = ? and prompt_id = ? and sample = ?", [run_id, it.prompt_id, it.sample]):
        return None
    row = {
        "run_id": run_id,
        "prompt_id": it.prompt_id,
        "sample": it.sample,
        "model_id": model_id,
        "constitution_version_id": constitution_version_id,
        "mode": it.mode,
        "prompt": it.prompt,
        "final": chain.response,
        "n_revisions": sum(1 for s in chain.steps if s.kind == "revision"),
        "flags": store.dumps(chain.flags),
        "created_at": store.now(),
    }
    with db.atomic():
        db.execute("delete from sl_partial_steps where run_id = ? and prompt_id = ? and sample = ?",
                   [run_id, it.prompt_id, it.sample])
        chain_id = int(db.table("chains").insert(row).last_pk or 0)
        db.table("chain_steps").insert_all(
            {
                "chain_id": chain_id,
                "idx": i,
                "kind": s.kind,
                "round": s.round,
                "principle": s.principle,
                "sent": s.sent,
                "output": s.output,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "seconds": s.seconds,
                "flags": store.dumps(s.flags),
            }
            for i, s in enumerate(chain.steps)
        )
    return chain_id


def store_partial(db: Database, run_id: int, chains: Sequence[Chain]) -> None:
    """Store the newest step of each chain as soon as it is made (a chain not yet whole: `store_chain` moves
    its steps into chain_steps when it is), so a cancel or crash loses at most the step in flight."""
    db.table("sl_partial_steps").insert_all(
        ({"run_id": run_id, "prompt_id": c.item.prompt_id, "sample": c.item.sample, "idx": len(c.steps) - 1,
          "kind": s.kind, "round": s.round, "principle": s.principle, "sent": s.sent, "output": s.output,
          "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "seconds": s.seconds,
          "flags": store.dumps(s.flags)} for c in chains for s in c.steps[-1:]),
        replace=True,
    )


def partial_steps(db: Database, run_id: int) -> dict[tuple[int, int], list[Step]]:
    """The steps a run made of chains it has not stored whole, by (prompt id, sample), in order."""
    out: dict[tuple[int, int], list[Step]] = {}
    for r in db.table("sl_partial_steps").rows_where("run_id = ?", [run_id], order_by="prompt_id, sample, idx"):
        out.setdefault((r["prompt_id"], r["sample"]), []).append(Step(
            r["kind"], r["round"], r["principle"], r["sent"], r["output"], r["prompt_tokens"],
            r["completion_tokens"], r["seconds"], store.loads(r["flags"], [])))
    return out


def stored_keys(db: Database, run_id: int) -> set[tuple[int, int]]:
    """(prompt id, sample) of every chain the run has already written."""
    rows = db.execute("select prompt_id, sample from chains where run_id = ?", [run_id]).fetchall()
    return {(int(p), int(s)) for p, s in rows}


def chunks(items: Sequence[ChainItem], size: int) -> list[list[ChainItem]]:
    """Groups of at most `size` items of one mode, in order: the unit that is built and then stored."""
    out: list[list[ChainItem]] = []
    for it in items:
        if out and len(out[-1]) < size and out[-1][0].mode == it.mode:
            out[-1].append(it)
        else:
            out.append([it])
    return out


# ----------------------------------------------------------------------------- the run stage


def plan(db: Database, config: Any) -> list[ChainItem]:
    """Every chain an SL run must end up with: one per red-team prompt, k per helpful prompt."""
    from cai.data import list_prompts

    if config.helpful_prompts and config.helpful_prompts == config.prompts:
        raise SLError("helpful_prompts: must be a different prompt set from prompts")
    mode = "direct" if config.direct else "critique"
    items = [ChainItem(p["id"], p["text"], 0, mode, slot)
             for slot, p in enumerate(list_prompts(db, config.prompts, limit=config.limit))]
    if config.helpful_prompts:
        helpful = list_prompts(db, config.helpful_prompts, limit=config.limit)
        items += [ChainItem(p["id"], p["text"], k, "helpful") for p in helpful for k in range(config.helpful_samples)]
    if not items:
        raise SLError(f"prompt set {config.prompts!r} has no prompts")
    return items


HELPFUL_TEMPERATURE = 0.7


def steps_per_chain(item: ChainItem, revisions: int) -> int:
    """Model calls one chain takes: its response, then per round a critique (unless direct) and a revision."""
    if item.mode == "helpful":
        return 1
    return 1 + revisions * (1 if item.mode == "direct" else 2)


def step_phase(first: int, size: int, total: int, kind: str, rnd: int, revisions: int) -> str:
    """Where a run is, in words: "chains 1-8 of 16: critique 2 of 4"."""
    what = "responses" if kind == "initial" else f"{kind} {rnd} of {revisions}"
    span = f"chain {first}" if size == 1 else f"chains {first}-{first + size - 1}"
    return f"{span} of {total}: {what}"


def flag_note(chains: Sequence[Chain]) -> str:
    """The log's note on a batch's flags, each flag said in words (FLAG_MEANINGS)."""
    counts: dict[str, int] = {}
    for c in chains:
        for f in {f.split(":")[1] for f in c.flags}:
            counts[f] = counts.get(f, 0) + 1
    if not counts:
        return ""
    said = "; ".join(f"{n} {f}: {FLAG_MEANINGS[f]}" for f, n in sorted(counts.items()))
    flagged = sum(1 for c in chains if c.flags)
    return f" ({flagged} of {len(chains)} chains in this batch flagged: {said})"


def run_summary(db: Database, run_id: int) -> dict[str, Any]:
    """What a finished SL run holds: chains per mode, flagged chains (and how many carry each flag), steps per kind."""
    modes = dict(db.execute("select mode, count(*) from chains where run_id = ? group by mode", [run_id]).fetchall())
    flagged = db.execute("select count(*) from chains where run_id = ? and flags != '[]'", [run_id]).fetchone()[0]
    per_flag: dict[str, int] = {}
    for (flags,) in db.execute("select flags from chains where run_id = ? and flags != '[]'", [run_id]).fetchall():
        for f in {f.split(":")[-1] for f in store.loads(flags, [])}:
            per_flag[f] = per_flag.get(f, 0) + 1
    kinds = db.execute(
        "select s.kind, count(*) from chain_steps s join chains c on c.id = s.chain_id where c.run_id = ? "
        "group by s.kind",
        [run_id],
    ).fetchall()
    return {"chains": sum(modes.values()), "modes": modes, "flagged": flagged,
            "flags": dict(sorted(per_flag.items())), "steps": dict(kinds)}


# ----------------------------------------------------------------------------- reading chains back


def list_chains(db: Database, run_id: int | None = None, limit: int | None = 100) -> list[dict[str, Any]]:
    where, args = ("run_id = ?", [run_id]) if run_id else (None, [])
    rows = db.table("chains").rows_where(where, args, order_by="id", limit=limit)
    return [{**r, "flags": store.loads(r["flags"], [])} for r in rows]


def get_chain(db: Database, chain_id: int) -> dict[str, Any]:
    """A chain with its steps in order, its model name and constitution version (for display)."""
    rows = list(db.table("chains").rows_where("id = ?", [chain_id]))
    if not rows:
        raise LookupError(f"no chain with id {chain_id}")
    chain = {**rows[0], "flags": store.loads(rows[0]["flags"], [])}
    steps = db.table("chain_steps").rows_where("chain_id = ?", [chain_id], order_by="idx")
    chain["steps"] = [{**s, "flags": store.loads(s["flags"], [])} for s in steps]
    model = db.execute("select name from models where id = ?", [chain["model_id"]]).fetchone()
    chain["model"] = model[0] if model else None
    cv = db.execute(
        "select c.name, v.version from constitution_versions v join constitutions c on c.id = v.constitution_id "
        "where v.id = ?",
        [chain["constitution_version_id"]],
    ).fetchone()
    chain["constitution"] = f"{cv[0]}@{cv[1]}" if cv else None
    return chain


def sft_records(db: Database, run_id: int) -> tuple[list[dict[str, str]], int]:
    """TRL prompt/completion rows of an SL run (final revisions and helpful samples), and how many were
    left out because their final response is empty (nothing to learn from)."""
    rows = chain_records(db, run_id)
    kept = [r for r in rows if r["completion"].strip()]
    return kept, len(rows) - len(kept)
