"""The transformers backend: batched `generate` with left padding and stop strings, and option scoring.

Option scoring only puts option positions through the output layer (262k columns for Gemma). On CPU
(`score_plan` "packed") it runs every token the call's prompts share once, unpadded, one forward pass per
row of the shared-prefix tree under a tree attention mask (prefix.py, packed.py: both orders and both
options of a comparison share the conversation); on GPUs each prompt runs once in padded batches, its KV
cache copied to its options. The tokenization rule is in tokens.py.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cai.backends import batching, packed, prefix, tokens
from cai.backends.base import Completion, SamplingParams, check_seeds, cut_at_stop, render_chat
from cai.backends.precision import DtypeChoice, pick_dtype
from cai.backends.tokens import OptionTokens

# Scoring budgets per forward pass: option positions whose full-vocabulary float32 log-probs are held
# at once (256 x 262k x 4 bytes = 268 MB for Gemma), and prompts x padded prompt length.
SCORE_LOGIT_ROWS = 256
SCORE_TOKENS = 16384
TREE_ROWS = 32  # most sibling segments one unpadded forward pass runs together
# What one more padded scoring batch (a prompt pass and a tail pass) costs, in prompt tokens: the plan in
# batching.py cuts a batch where that saves more padding. CPU: measured on the default model (fp32, one
# thread), a forward pass costs ~100 ms over ~2.5 ms per token. GPUs run padding nearly free, so cut rarely.
PASS_SLOTS_CPU = 64
PASS_SLOTS_GPU = 4096


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["DtypeChoice", "HFBackend", "pick_device", "pick_dtype"]


def kv_bytes_per_token(config, dtype_bytes: int = 2) -> int:  # type: ignore[no-untyped-def]
    """KV-cache bytes one token takes across all layers (keys and values)."""
    cfg = getattr(config, "text_config", config)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * dtype_bytes


def batch_for_memory(free_bytes: int, per_token: int, seq_len: int = 2048, share: float = 0.5) -> int:
    """Sequences of `seq_len` tokens whose KV cache fits in `share` of free memory, within [8, 256]."""
    return max(8, min(256, int(free_bytes * share) // max(1, per_token * seq_len)))


def score_plan(device: str) -> str:
    """The default option-scoring plan for a device (`CAI_SCORE_PLAN` = packed | padded overrides).

    CPUs compute every token slot, padding included, so the packed tree (each shared token once, nothing
    padded, one pass per row) is the least work there; GPUs run padding nearly free and their fused
    attention kernels take no tree mask, so padded batches on a KV cache stay the GPU default.
    """
    asked = os.environ.get("CAI_SCORE_PLAN", "").strip()
    if asked:
        if asked not in ("packed", "padded"):
            raise ValueError(f"CAI_SCORE_PLAN must be packed or padded, got {asked!r}")
        return asked
    return "packed" if device == "cpu" else "padded"


def attn_tokens(model) -> float:  # type: ignore[no-untyped-def]
    """Linear-layer work per token over attention work per query-key pair (packed.py's cost unit)."""
    cfg = getattr(model.config, "text_config", model.config)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    embed = model.get_input_embeddings().weight
    head = getattr(model.get_output_embeddings(), "weight", embed)
    # Parameters counts a tied output layer once; either way the output layer runs at the read positions only.
    linear = sum(p.numel() for p in model.parameters()) - embed.numel() - (head.numel() if head is not embed else 0)
    return max(1.0, linear / (2 * cfg.num_hidden_layers * heads * head_dim))


class _StopOnStrings(StoppingCriteria):
    """Marks a row finished once its generated text contains a stop string (checks a tail window)."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len
        # A token spells at least one byte of text, so a stop string fits in this many tokens.
        self.window = 4 * max(len(s.encode()) for s in self.stops) + 4

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:  # type: ignore[no-untyped-def, override]
        tail = input_ids[:, self.prompt_len :][:, -self.window :]
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class StopOnFlag(StoppingCriteria):
    """Ends every row of a generation once `flag()` is true (a run's cancel request), polling it at most
    every `every_s` seconds so a database read does not slow each token down."""

    def __init__(self, flag: Callable[[], bool], every_s: float = 0.5) -> None:
        self.flag, self.every_s, self.next_check, self.fired = flag, every_s, 0.0, False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:  # type: ignore[no-untyped-def, override]
        now = time.monotonic()
        if not self.fired and now >= self.next_check:
            self.next_check = now + self.every_s
            self.fired = bool(self.flag())
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class SeededSampler(LogitsProcessor):
    """Samples each row with its own generator (seeded from the prompt's seed) and leaves only the drawn
    token open, so greedy decoding then takes it: a row's sample does not depend on its batch-mates.

    Runs with `do_sample=False`: transformers applies its sampling warpers after custom processors, so this
    processor applies temperature, top-k and top-p itself before it draws."""

    def __init__(self, params: SamplingParams, seeds: Sequence[int], device: str) -> None:
        self.warpers = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k > 0:
            self.warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:  # type: ignore[override]
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators, strict=True)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(drawn), device=scores.device), drawn] = 0.0
        return out  # type: ignore[return-value]


class HFBackend:
    """A causal LM served by transformers. `.model`, `.tokenizer` and `.path` are public for training."""

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        chat: bool = False,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        batch_size: int | None = None,
        purpose: str = "generate",
    ) -> None:
        self.path = str(path)
        self.name = name or self.path
        self.chat = chat
        self.device = device or pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if dtype is None:
            self.dtype_choice = pick_dtype(self.device, self.path, purpose)
        else:
            name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
            self.dtype_choice = DtypeChoice(name, "asked for by the caller")
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype_choice.dtype, self.dtype_choice.dtype)
        ).to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        if batch_size is None and self.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            batch_size = batch_for_memory(
                free, kv_bytes_per_token(self.model.config, self.model.dtype.itemsize)
            )
        self.batch_size = batch_size or 16
        self.should_stop: Callable[[], bool] | None = None  # a run's cancel flag, polled during generation
        self.stop_poll_s = 0.5  # ... at most this often
        # Opt-in: the shared-prefix tree on KV caches, one pass per tree level (slower than either plan
        # below on a loaded 2-core CPU, bench/feedback.py); it overrides `score_plan` when set.
        self.shared_prefix = False
        # "packed" (the tree in rows with a tree mask, packed.py) or "padded"; see `score_plan`.
        self.score_plan = score_plan(self.device)
        self._attn_tokens: float | None = None
        self.pass_slots = PASS_SLOTS_CPU if self.device == "cpu" else PASS_SLOTS_GPU  # see batching.plan
        self._bos = tokens.bos_prefix(self.tokenizer)
        eos = self.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self._eos.add(self.tokenizer.eos_token_id)

    def __repr__(self) -> str:
        return (
            f"HFBackend({self.name!r}, path={self.path!r}, device={self.device!r}, dtype={self.model.dtype})"
        )

    # -- rendering -----------------------------------------------------------------------------

    def render(self, transcript: str) -> str:
        return render_chat(self.tokenizer, transcript) if self.chat else transcript

    # -- generation ----------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """Completions in prompt order; prompts are batched by length (left padding).

        Per-prompt `params.seeds` sample each prompt with its own generator (`SeededSampler`), so its text
        does not depend on the prompts batched with it. Else a seed seeds torch's global generator once per
        call, so a call's samples are reproducible, though a prompt's sample depends on its batch.
        """
        check_seeds(prompts, params)
        if params.seed is not None and not params.seeds:
            torch.manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seeds = [params.seeds[i] for i in idx] if params.seeds else None
            for i, c in zip(idx, self._generate_batch([prompts[i] for i in idx], params, seeds), strict=True):
                results[i] = c
        return [results[i] for i in range(len(prompts))]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        sample = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else 1.0,
            top_p=params.top_p if sample else 1.0,
            top_k=params.top_k if sample else None,
            eos_token_id=sorted(self._eos) or None,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[str], params: SamplingParams, seeds: list[int] | None = None
    ) -> list[Completion]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        width = enc.input_ids.shape[1]
        stops = [s for s in params.stop if s]
        criteria: list[StoppingCriteria] = [_StopOnStrings(self.tokenizer, stops, width)] if stops else []
        if self.should_stop is not None:  # set by a run: cancel inside a long generation
            criteria.append(StopOnFlag(self.should_stop, self.stop_poll_s))
        config, processors = self._generation_config(params), LogitsProcessorList()
        if seeds is not None and params.temperature > 0:
            # Each row draws with its own generator (SeededSampler) and leaves one token open: greedy takes it.
            config = self._generation_config(dataclasses.replace(params, temperature=0.0))
            processors.append(SeededSampler(params, seeds, self.device))
        out = self.model.generate(
            **enc, generation_config=config, stopping_criteria=criteria, logits_processor=processors
        )
        completions = []
        for row, mask in zip(out[:, width:].tolist(), enc.attention_mask.sum(1).tolist(), strict=True):
            ids, hit_eos = self._trim(row)
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stops)  # type: ignore[arg-type]
            reason = "stop" if stopped or hit_eos else "length"
            completions.append(Completion(text, int(mask), len(ids) + int(hit_eos), reason))
        return completions

    def _trim(self, row: list[int]) -> tuple[list[int], bool]:
        """Generated ids before the first EOS (and without the padding of rows that stopped early)."""
        for k, t in enumerate(row):
            if t in self._eos:
                return row[:k], True
        pad = self.tokenizer.pad_token_id
        end = len(row)
        while end and row[end - 1] == pad:
            end -= 1
        return row[:end], False

    # -- option scoring ------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids as the model sees a prompt: BOS (if the tokenizer adds one) + the text's tokens."""
        return tokens.encode(self.tokenizer, text, self._bos)

    def option_tokens(self, prompt: str, option: str, prompt_ids: list[int] | None = None) -> OptionTokens:
        """See `cai.backends.tokens.option_tokens` for the rule."""
        return tokens.option_tokens(self.tokenizer, self._bos, prompt, option, prompt_ids)

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Sum of each option's token log-probs after its prompt; see `shared_prefix` for the CPU plan.

        With `shared_prefix` every token the prompts share runs once (unpadded); otherwise each prompt runs once
        in length-sorted padded batches, its KV cache copied to its options (`padded_batches`).
        """
        if len(prompts) != len(options):
            raise ValueError(f"got {len(prompts)} prompts but {len(options)} option lists")
        if self.shared_prefix:
            return self._tree_logprobs(prompts, options)
        if self.score_plan == "packed":
            return self._packed_logprobs(prompts, options)
        return self._padded_logprobs(prompts, options)

    def _sequences(
        self, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[tuple[int, list[int], int]]:
        """(key, ids, n_option) per prompt and option; key = prompt index * width + option index."""
        width = max((len(o) for o in options), default=0)
        out = []
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            p = self.encode(prompt)
            for j, option in enumerate(opts):
                rule = self.option_tokens(prompt, option, p)
                out.append((i * width + j, rule.ids, rule.n_option))
        return out

    def _tree_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        width = max((len(o) for o in options), default=0)
        totals = [0.0] * (len(prompts) * width)
        self._run_tree(prefix.build(self._sequences(prompts, options)), None, [], totals)
        return [[totals[i * width + j] for j in range(len(opts))] for i, opts in enumerate(options)]

    @torch.inference_mode()
    def _run_tree(self, nodes: list[prefix.Node], cache, rows: list[int], totals: list[float]) -> None:  # type: ignore[no-untyped-def]
        """Run sibling segments (each continuing cache row `rows[i]`), equal lengths together, unpadded."""
        by_len: dict[int, list[int]] = {}
        for i, n in enumerate(nodes):
            by_len.setdefault(len(n.ids), []).append(i)
        chunks = [m[k : k + TREE_ROWS] for m in by_len.values() for k in range(0, len(m), TREE_ROWS)]
        for c, chunk in enumerate(chunks):
            group = [nodes[i] for i in chunk]
            keep = sorted({pos for n in group for pos, _, _ in n.reads})
            grow = any(n.children for n in group)
            if not keep and not grow:
                continue
            past = None
            if cache is not None:  # the last chunk may take the parent's cache itself
                past = cache if c == len(chunks) - 1 else copy.deepcopy(cache)
                past.batch_select_indices(torch.tensor([rows[i] for i in chunk], device=self.device))
            out = self.model(
                input_ids=torch.tensor([n.ids for n in group], device=self.device),
                past_key_values=past,
                use_cache=grow,
                logits_to_keep=torch.tensor(keep, device=self.device) if keep else 1,
            )
            if keep:
                logp = torch.log_softmax(out.logits.float(), dim=-1)  # (rows, kept positions, vocab)
                col = {pos: k for k, pos in enumerate(keep)}
                for r, n in enumerate(group):
                    for pos, token, key in n.reads:
                        totals[key] += float(logp[r, col[pos], token])
            below = [(child, r) for r, n in enumerate(group) for child in n.children]
            if below:
                self._run_tree([b for b, _ in below], out.past_key_values, [r for _, r in below], totals)

    def _packed_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """The call's shared-prefix tree cut into rows (packed.py), one unpadded forward pass per row."""
        width = max((len(o) for o in options), default=0)
        totals = [0.0] * (len(prompts) * width)
        if self._attn_tokens is None:
            self._attn_tokens = attn_tokens(self.model)
        units = packed.units(prefix.build(self._sequences(prompts, options)), self._attn_tokens)
        for row in packed.rows(units, self._attn_tokens, self.pass_slots):
            for key, value in self._score_row(row):
                totals[key] += value
        return [[totals[i * width + j] for j in range(len(opts))] for i, opts in enumerate(options)]

    @torch.inference_mode()
    def _score_row(self, row: packed.Row) -> list[tuple[int, float]]:
        """One forward pass over a packed row: (key, log-prob of the token) for each of its reads."""
        n = row.size
        allowed = torch.zeros(n, n, dtype=torch.bool)
        for start, end, above in row.visible():
            allowed[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
            for a, b in above:
                allowed[start:end, a:b] = True
        pos = torch.tensor(row.positions())
        mask: torch.Tensor | dict[str, torch.Tensor] = allowed[None, None].to(self.device)
        cfg = getattr(self.model.config, "text_config", self.model.config)
        window = getattr(cfg, "sliding_window", None)
        if window and "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
            near = (pos[:, None] - pos[None, :]) < window  # as transformers' sliding_window_overlay
            mask = {"full_attention": mask, "sliding_attention": (allowed & near)[None, None].to(self.device)}
        reads = row.reads()
        keep = sorted({at for at, _, _ in reads})
        col = {at: k for k, at in enumerate(keep)}
        logits = self.model(
            input_ids=torch.tensor([row.ids()], device=self.device),
            position_ids=pos[None].to(self.device),
            attention_mask=mask,
            logits_to_keep=torch.tensor(keep, device=self.device),
            use_cache=False,
        ).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return [(key, float(logp[col[at], token])) for at, token, key in reads]

    def _padded_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Each prompt runs once; its KV cache is copied to its options, which then run together."""
        groups: list[batching.Group] = []
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            p = self.encode(prompt)
            tails = []
            for j, option in enumerate(opts):
                rule = self.option_tokens(prompt, option, p)
                if rule.n_option:  # the rule always yields the prompt's ids + the option's tail
                    tails.append((j, rule.ids[len(rule.ids) - rule.n_option :]))
            groups += batching.split_group(i, p, tails, SCORE_LOGIT_ROWS)
        scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
        plan = batching.batches(
            sorted(groups, key=lambda g: len(g.prompt)),
            tokens=SCORE_TOKENS,
            logit_rows=SCORE_LOGIT_ROWS,
            pass_slots=self.pass_slots,
        )
        for batch in plan:
            for g, values in zip(batch, self._score_batch(batch), strict=True):
                for (j, _), value in zip(g.tails, values, strict=True):
                    scores[g.index][j] = value
        return scores

    @torch.inference_mode()
    def _score_batch(self, batch: list[batching.Group]) -> list[list[float]]:
        pad = self.tokenizer.pad_token_id or 0
        width = max(len(g.prompt) for g in batch)
        ids = torch.tensor([[pad] * (width - len(g.prompt)) + g.prompt for g in batch], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(g.prompt)) + [1] * len(g.prompt) for g in batch], device=self.device
        )
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            logits_to_keep=1,
            use_cache=True,
        )
        first = torch.log_softmax(
            out.logits[:, -1].float(), dim=-1
        )  # (prompts, vocab): each tail's first token
        rows = [(k, tail) for k, g in enumerate(batch) for _, tail in g.tails]
        values = [float(first[k, tail[0]]) for k, tail in rows]
        rest = max(len(tail) for _, tail in rows) - 1
        if rest:  # feed tokens 1..n-1 of every tail on top of its prompt's cache, right-padded
            index = torch.tensor([k for k, _ in rows], device=self.device)
            cache = out.past_key_values
            cache.batch_select_indices(index)
            feed = torch.tensor([(tail[:-1] + [pad] * rest)[:rest] for _, tail in rows], device=self.device)
            tail_mask = torch.tensor(
                [[1] * (len(t) - 1) + [0] * (rest - len(t) + 1) for _, t in rows], device=self.device
            )
            start = mask.sum(1)[index].unsqueeze(1)
            logits = self.model(
                input_ids=feed,
                attention_mask=torch.cat([mask[index], tail_mask], dim=1),
                position_ids=start + torch.arange(rest, device=self.device),
                past_key_values=cache,
                use_cache=True,
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1)  # position t predicts tail token t+1
            targets = torch.tensor([(tail[1:] + [pad] * rest)[:rest] for _, tail in rows], device=self.device)
            picked = (logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * tail_mask).sum(1)
            values = [v + float(x) for v, x in zip(values, picked.tolist(), strict=True)]
        grouped, n = [], 0
        for g in batch:
            grouped.append(values[n : n + len(g.tails)])
            n += len(g.tails)
        return grouped
