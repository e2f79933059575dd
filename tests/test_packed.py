"""The packed tree plan: literal sequences in, exact rows out; and on real models, scores equal to the simple
one-sequence-at-a-time scorer (the HHH items' choices and probabilities)."""

from __future__ import annotations

import pytest
import torch

from cai import prompts
from cai.backends import packed, prefix
from cai.evals.hhh import SAMPLE, read_hhh

# prompt AB = [1, 2, 3, 4, 9], prompt BA = [1, 2, 3, 5, 9]; options [7, 8] and [7, 6] (as in test_prefix)
SEQS = [(0, [1, 2, 3, 4, 9, 7, 8], 2), (1, [1, 2, 3, 4, 9, 7, 6], 2),
        (2, [1, 2, 3, 5, 9, 7, 8], 2), (3, [1, 2, 3, 5, 9, 7, 6], 2)]  # fmt: skip


def test_one_row_holds_both_orders_and_options_once():
    units = packed.units(prefix.build(SEQS), attn_tokens=1e9)  # attention free: never cut
    (row,) = packed.rows(units, attn_tokens=1e9, pass_tokens=64)
    # depth-first: the conversation, order AB with its option tails, order BA with its
    assert row.ids() == [1, 2, 3, 4, 9, 7, 8, 6, 5, 9, 7, 8, 6]
    assert row.positions() == [0, 1, 2, 3, 4, 5, 6, 6, 3, 4, 5, 6, 6]
    # each segment sees itself causally and the segments above it: "8" and "6" are siblings, as are the orders
    assert row.visible() == [(0, 3, []), (3, 6, [(0, 3)]), (6, 7, [(3, 6), (0, 3)]), (7, 8, [(3, 6), (0, 3)]),
                             (8, 11, [(0, 3)]), (11, 12, [(8, 11), (0, 3)]), (12, 13, [(8, 11), (0, 3)])]  # fmt: skip
    # row index 4 (token 9 of AB) predicts 7 for keys 0 and 1, index 5 (7) predicts 8 or 6; BA likewise
    assert row.reads() == [(4, 7, 0), (5, 8, 0), (4, 7, 1), (5, 6, 1), (9, 7, 2), (10, 8, 2), (9, 7, 3), (10, 6, 3)]
    assert packed.tokens_run([row]) == 13


def test_costly_attention_cuts_the_tree_and_repeats_the_shared_part():
    units = packed.units(prefix.build(SEQS), attn_tokens=1.0)  # attention pairs cost as much as tokens
    assert [[(s.ids, s.start, s.parent) for s in u] for u in units] == [
        [([1, 2, 3], 0, -1), ([4, 9, 7], 3, 0), ([8], 6, 1), ([6], 6, 1)],
        [([1, 2, 3], 0, -1), ([5, 9, 7], 3, 0), ([8], 6, 1), ([6], 6, 1)],
    ]
    # every read is taken once: the cut conversation has none; each order's reads stay in its unit
    assert [r for u in units for s in u for r in s.reads] == [
        (1, 7, 0), (2, 8, 0), (1, 7, 1), (2, 6, 1), (1, 7, 2), (2, 8, 2), (1, 7, 3), (2, 6, 3)]  # fmt: skip
    # two 8-token units: packing them adds 2 x 8 x 8 = 128 pairs, more than a 64-token pass -> two rows
    assert [r.size for r in packed.rows(units, attn_tokens=1.0, pass_tokens=64)] == [8, 8]
    # a row is never longer than the largest unit, however cheap attention is
    assert [r.size for r in packed.rows(units, attn_tokens=1e9, pass_tokens=64)] == [8, 8]
    small = packed.units(prefix.build([(0, [1, 2], 1), (1, [3, 4], 1), (2, [5, 6, 7, 8], 1)]), 1e9)
    assert [r.ids() for r in packed.rows(small, attn_tokens=1e9, pass_tokens=64)] == [[5, 6, 7, 8], [1, 2, 3, 4]]


def simple_scores(backend, texts: list[str]) -> list[list[float]]:  # type: ignore[no-untyped-def]
    """The simple scorer: one causal pass per prompt + option, full logits, summed option log-probs."""
    out = []
    with torch.inference_mode():
        for text in texts:
            row = []
            for option in prompts.OPTIONS:
                rule = backend.option_tokens(text, option)
                logits = backend.model(input_ids=torch.tensor([rule.ids])).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)
                n = len(rule.ids)
                row.append(sum(float(logp[t - 1, rule.ids[t]]) for t in range(n - rule.n_option, n)))
            out.append(row)
    return out


def check_equal(backend, items) -> None:  # type: ignore[no-untyped-def]
    texts = [it.text(swapped, False) for it in items for swapped in (False, True)]
    fast = backend.option_logprobs(texts, [list(prompts.OPTIONS)] * len(texts))
    ref = simple_scores(backend, texts)
    for f, r in zip(fast, ref, strict=True):
        assert f == pytest.approx(r, abs=1e-4)
        assert (f[0] > f[1]) == (r[0] > r[1])  # the same choice: p(A) > 0.5 strictly, or not


def test_packed_is_the_cpu_default_and_equals_the_simple_scorer_on_tiny(shared):
    from cai import backends

    tiny = backends.load("tiny", cache=False)
    assert (tiny.device, tiny.score_plan) == ("cpu", "packed")
    check_equal(tiny, read_hhh(SAMPLE))
    check_equal(tiny, read_hhh(shared / "cai-paper/evals/HHH-dev-sample.jsonl", 6))


def test_sliding_window_layers_get_a_windowed_tree_mask(tmp_path):
    """A Gemma 3 model with a 16-token window on every other layer: rows far longer than the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from cai.backends.builtin import tiny_tokenizer
    from cai.backends.hf import HFBackend

    tok = tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = HFBackend(str(tmp_path), device="cpu", dtype="float32")
    items = read_hhh(SAMPLE, 4)
    assert min(len(backend.encode(it.prompt)) for it in items) > 4 * 16
    check_equal(backend, items)
    backend.score_plan = "padded"
    check_equal(backend, items)


def test_score_plan_env_override(monkeypatch):
    from cai.backends.hf import score_plan

    assert (score_plan("cpu"), score_plan("cuda")) == ("packed", "padded")
    monkeypatch.setenv("CAI_SCORE_PLAN", "padded")
    assert score_plan("cpu") == "padded"
    monkeypatch.setenv("CAI_SCORE_PLAN", "tree")
    with pytest.raises(ValueError, match="CAI_SCORE_PLAN must be packed or padded, got 'tree'"):
        score_plan("cpu")


@pytest.mark.slow
def test_packed_equals_the_simple_scorer_on_the_embedded_feedback_model(shared):
    from cai import backends

    smollm2 = backends.load("smollm2", dtype=torch.float32)
    assert smollm2.score_plan == "packed"
    check_equal(smollm2, read_hhh(shared / "cai-paper/evals/HHH-dev-sample.jsonl", 3))
