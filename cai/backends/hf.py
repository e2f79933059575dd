"""The transformers backend: batched `generate` with left padding and stop strings, and option scoring.

Option scoring runs each prompt+option once with `logits_to_keep`, so the output layer (262k columns
for Gemma) only runs on the option positions; the tokenization rule is in tokens.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteria

from cai.backends import tokens
from cai.backends.base import Completion, SamplingParams, cut_at_stop, render_chat
from cai.backends.tokens import OptionTokens

# Scoring budget: rows x kept positions of full-vocabulary float32 log-probs held at once.
SCORE_LOGIT_ROWS = 512
SCORE_TOKENS = 16384  # rows x sequence length per forward pass


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str) -> torch.dtype | str:
    """bf16 on GPUs; on CPU the checkpoint's own dtype ("auto": bf16 for default, fp32 for tiny).

    $CAI_DTYPE (float32|bfloat16|float16) overrides both.
    """
    env = os.environ.get("CAI_DTYPE")
    if env:
        return getattr(torch, env)
    return torch.bfloat16 if device == "cuda" else "auto"


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
    ) -> None:
        self.path = str(path)
        self.name = name or self.path
        self.chat = chat
        self.device = device or pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=dtype if dtype is not None else pick_dtype(self.device)
        ).to(self.device)
        self.model.eval()
        self.batch_size = batch_size or (64 if self.device == "cuda" else 16)
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
        """Completions in prompt order; prompts are batched by length (left padding)."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._generate_batch([prompts[i] for i in idx], params), strict=True):
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
    def _generate_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        width = enc.input_ids.shape[1]
        stops = [s for s in params.stop if s]
        criteria = [_StopOnStrings(self.tokenizer, stops, width)] if stops else []
        out = self.model.generate(
            **enc, generation_config=self._generation_config(params), stopping_criteria=criteria
        )
        completions = []
        for row, mask in zip(out[:, width:].tolist(), enc.attention_mask.sum(1).tolist(), strict=True):
            ids, hit_eos = self._trim(row)
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stops)
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
        if len(prompts) != len(options):
            raise ValueError(f"got {len(prompts)} prompts but {len(options)} option lists")
        items: list[tuple[int, int, OptionTokens]] = []
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            p = self.encode(prompt)
            items += [(i, j, self.option_tokens(prompt, o, p)) for j, o in enumerate(opts)]
        scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
        todo = sorted((it for it in items if it[2].n_option), key=lambda it: len(it[2].ids))
        for batch in _score_batches(todo):
            for (i, j, _), value in zip(batch, self._score_batch([it[2] for it in batch]), strict=True):
                scores[i][j] = value
        return scores

    @torch.inference_mode()
    def _score_batch(self, rows: list[OptionTokens]) -> list[float]:
        width = max(len(r.ids) for r in rows)
        keep = max(r.n_option for r in rows) + 1
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows], device=self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, use_cache=False
        ).logits  # (rows, keep, vocab): positions width-keep .. width-1
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts tokens width-keep+1 .. width-1
        targets = ids[:, width - keep + 1 :]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (rows, keep-1)
        out = []
        for k, r in enumerate(rows):
            out.append(float(picked[k, picked.shape[1] - r.n_option :].sum()))
        return out


def _score_batches(items: list[tuple[int, int, OptionTokens]]) -> list[list[tuple[int, int, OptionTokens]]]:
    """Split length-sorted items so each forward pass stays within the token and logit budgets."""
    batches: list[list[tuple[int, int, OptionTokens]]] = []
    current: list[tuple[int, int, OptionTokens]] = []
    width = keep = 0
    for it in items:
        w, k = max(width, len(it[2].ids)), max(keep, it[2].n_option + 1)
        if current and ((len(current) + 1) * w > SCORE_TOKENS or (len(current) + 1) * k > SCORE_LOGIT_ROWS):
            batches.append(current)
            current, w, k = [], len(it[2].ids), it[2].n_option + 1
        current.append(it)
        width, keep = w, k
    if current:
        batches.append(current)
    return batches
