"""The transformers backend on the tiny random model: generation, stop strings, padding, scoring, loading."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from cai import backends, models
from cai.backends import SamplingParams
from cai.backends.builtin import ensure_built, tiny_tokenizer
from cai.backends.hf import batch_for_memory, kv_bytes_per_token

FRANCE = "\n\nHuman: What is the capital of France?\n\nAssistant:"
HI = "\n\nHuman: hi\n\nAssistant:"


@pytest.fixture(scope="module")
def tiny():
    return backends.load("tiny")


def test_load_is_cached_and_exposes_training_handles(tiny):
    assert backends.load("tiny") is tiny
    assert Path(tiny.path, "config.json").is_file()
    assert backends.model_path("tiny") == tiny.path
    assert (tiny.name, tiny.chat, tiny.model.dtype) == ("tiny", False, torch.float32)
    assert (tiny.tokenizer.pad_token, tiny.tokenizer.eos_token, tiny.tokenizer.bos_token) == (
        "<pad>",
        "<eos>",
        "<bos>",
    )


def test_greedy_generation_is_deterministic(tiny):
    params = SamplingParams(max_new_tokens=8, stop=())
    first = tiny.generate([FRANCE], params)
    assert first == tiny.generate([FRANCE], params)
    assert first[0].text == " IdentK removeit inum France Ident"
    assert (first[0].prompt_tokens, first[0].completion_tokens, first[0].finish_reason) == (16, 8, "length")


def test_stop_string_cuts_the_text_and_ends_generation(tiny):
    [done] = tiny.generate([FRANCE], SamplingParams(max_new_tokens=40, stop=("France",)))
    assert done.text == " IdentK removeit inum "
    assert done.finish_reason == "stop"
    assert done.completion_tokens < 40  # stopped early, not cut after the fact


def test_left_padding_gives_the_same_output_alone_and_in_a_batch(tiny):
    params = SamplingParams(max_new_tokens=12, stop=())
    [alone] = tiny.generate([HI], params)
    batch = tiny.generate([FRANCE, HI], params)
    assert batch[1] == alone
    assert batch[0] == tiny.generate([FRANCE], params)[0]


def test_per_prompt_seeds_give_a_prompt_the_same_sample_alone_and_in_any_batch(tiny):
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9, stop=(), seeds=(11, 12, 11))
    batch = tiny.generate([HI, HI, FRANCE], params)
    assert batch[0] != batch[1]  # two seeds, two samples of one prompt
    assert tiny.generate([HI], SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9, stop=(), seeds=(11,))) \
        == [batch[0]]
    assert tiny.generate([FRANCE], SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9, stop=(), seeds=(11,))) \
        == [batch[2]]
    with pytest.raises(ValueError, match="got 1 seeds for 2 prompts"):
        tiny.generate([HI, HI], SamplingParams(temperature=0.7, seeds=(1,)))


def test_batches_smaller_than_the_prompt_list_keep_prompt_order(tiny):
    params = SamplingParams(max_new_tokens=6, stop=())
    whole = tiny.generate([FRANCE, HI, FRANCE + " Paris", HI], params)
    old = tiny.batch_size
    tiny.batch_size = 1
    try:
        assert tiny.generate([FRANCE, HI, FRANCE + " Paris", HI], params) == whole
    finally:
        tiny.batch_size = old


def test_max_new_tokens_is_respected(tiny):
    out = tiny.generate([FRANCE, HI], SamplingParams(max_new_tokens=3, stop=()))
    assert [(c.completion_tokens, c.finish_reason) for c in out] == [(3, "length"), (3, "length")]


def test_seeded_sampling_is_reproducible(tiny):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=3, stop=())
    a = tiny.generate([FRANCE, HI], params)
    assert a == tiny.generate([FRANCE, HI], params)
    other = tiny.generate([FRANCE, HI], SamplingParams(max_new_tokens=10, temperature=1.0, seed=4, stop=()))
    assert [c.text for c in other] != [c.text for c in a]
    greedy = tiny.generate([FRANCE, HI], SamplingParams(max_new_tokens=10, stop=()))
    assert [c.text for c in greedy] != [c.text for c in a]


def _brute_force(tiny, prompt: str, option: str) -> float:
    """Full logits at every position, log-softmax, sum over the option's tokens."""
    rule = tiny.option_tokens(prompt, option)
    ids = torch.tensor([rule.ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0].float(), dim=-1)
    n = len(rule.ids)
    return float(sum(logp[t - 1, rule.ids[t]] for t in range(n - rule.n_option, n)))


def test_option_logprobs_match_a_brute_force_computation(tiny):
    prompts = [FRANCE, HI, "\n\nHuman: Hum"]
    options = [[" (A)", " (B)", " Paris is the capital."], [" yes", ""], ["an", " Human"]]
    got = tiny.option_logprobs(prompts, options)
    assert [len(row) for row in got] == [3, 2, 2]
    assert got[1][1] == 0.0  # the empty option
    for prompt, opts, row in zip(prompts, options, got, strict=True):
        for option, value in zip(opts, row, strict=True):
            assert value == pytest.approx(_brute_force(tiny, prompt, option), abs=1e-4)
    assert all(v < 0 for v in got[0])


def test_option_scores_do_not_depend_on_batching(tiny, monkeypatch):
    prompts, options = [FRANCE, HI], [[" (A)", " (B)"], [" yes", " no thanks", " maybe"]]
    together = tiny.option_logprobs(prompts, options)
    monkeypatch.setattr("cai.backends.hf.SCORE_TOKENS", 1)  # one prompt per forward pass
    monkeypatch.setattr("cai.backends.hf.SCORE_LOGIT_ROWS", 1)  # one option per prompt pass
    apart = tiny.option_logprobs(prompts, options)
    assert sum(apart, []) == pytest.approx(sum(together, []), abs=1e-5)


def test_option_scoring_reuses_the_prompt_cache_across_a_sliding_window(tmp_path):
    """A 2-layer Gemma 3 with an 8-token sliding window: prompts longer than the window still score exactly."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gemma = backends.load(str(tmp_path), cache=False, dtype=torch.float32)
    prompts = [FRANCE, HI, FRANCE + " Paris, I think."]
    options = [[" (A)", " The capital is Paris."], [" yes"], [" no", " Lyon or Paris"]]
    got = gemma.option_logprobs(prompts, options)
    for prompt, opts, row in zip(prompts, options, got, strict=True):
        for option, value in zip(opts, row, strict=True):
            assert value == pytest.approx(_brute_force(gemma, prompt, option), abs=1e-4)


def test_option_tokenization_rule(tiny):
    # Usual case: the prompt's tokens are a prefix of prompt+option's tokens.
    natural = tiny.option_tokens(HI, " there")
    assert natural.ids == tiny.encode(HI + " there") and natural.n_option == 2
    # "Hum" + "an" merges into the token "Human": keep the prompt's own tokens, append "an" alone.
    merged = tiny.option_tokens("\n\nHuman: Hum", "an")
    prompt_ids = tiny.encode("\n\nHuman: Hum")
    assert tiny.encode("\n\nHuman: Human")[: len(prompt_ids)] != prompt_ids
    assert merged.ids == prompt_ids + tiny.tokenizer("an", add_special_tokens=False).input_ids
    assert merged.n_option == 1


def test_option_logprobs_rejects_mismatched_lists(tiny):
    with pytest.raises(ValueError, match="2 prompts but 1 option lists"):
        tiny.option_logprobs([FRANCE, HI], [[" a"]])


def test_render_uses_the_chat_template_only_for_chat_models(tiny, db):
    assert tiny.render(HI) == HI
    models.register_model(db, "tiny-chat", "tiny", chat=True)
    chat = backends.load("tiny-chat", db=db)
    assert chat.chat and chat is not tiny
    assert chat.render(HI) == "<bos><|user|>\nhi<eos>\n<|assistant|>\n"


def test_tiny_tokenizer_is_deterministic():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert len(a) == 512


def test_unknown_specs_fail_clearly(db, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LookupError, match="'nobody/no-such-model' is not a registered model"):
        backends.model_path("nobody/no-such-model")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        backends.model_path(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        backends.model_path(str(tmp_path))
    with pytest.raises(ValueError, match="backend must be one of hf, vllm"):
        backends.load("tiny", backend="onnx")


def test_ensure_built_builds_once_under_concurrency(tmp_path):
    calls = []

    def builder(out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    threads = [threading.Thread(target=ensure_built, args=(tmp_path / "m", builder)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_ensure_built_leaves_nothing_behind_when_the_builder_fails(tmp_path):
    def broken(out: Path) -> None:
        (out / "half.bin").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ensure_built(tmp_path / "m", broken)
    assert [p.name for p in tmp_path.iterdir()] == [".m.lock"]


def test_ensure_built_replaces_an_outdated_build(tmp_path):
    def builder(tag: str):
        return lambda out: (out / "config.json").write_text(tag)

    ensure_built(tmp_path / "m", builder("v1"), version=1)
    ensure_built(tmp_path / "m", builder("ignored"), version=1)
    assert (tmp_path / "m" / "config.json").read_text() == "v1"
    ensure_built(tmp_path / "m", builder("v2"), version=2)
    assert (tmp_path / "m" / "config.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]


def test_gpu_batch_size_follows_free_memory(tiny):
    # tiny: 2 layers x 2 KV heads x head_dim 16 x (K and V) x 4 bytes (fp32) = 512 bytes per token.
    per_token = kv_bytes_per_token(tiny.model.config, 4)
    assert per_token == 512
    assert batch_for_memory(64 * 2**20, per_token) == 32  # half of 64 MiB / (512 B x 2048)
    assert batch_for_memory(2**20, per_token) == 8
    assert batch_for_memory(80 * 2**30, per_token) == 256


def test_a_cancel_flag_ends_a_long_generation_early(tiny):
    """A run's cancel request, polled by a StoppingCriteria, stops generation within the next poll."""
    from cai.backends.hf import StopOnFlag

    params = SamplingParams(max_new_tokens=64, stop=())
    calls = []
    tiny.should_stop = lambda: calls.append(1) or len(calls) >= 2  # true from the second poll on
    tiny.stop_poll_s = 0.0
    try:
        [c] = tiny.generate(["Hello there"], params)
    finally:
        tiny.should_stop, tiny.stop_poll_s = None, 0.5
    assert c.completion_tokens <= 2 and len(calls) <= 2  # stopped at the second token (or an earlier EOS)
    [full] = tiny.generate(["Hello there"], params)
    assert full.completion_tokens == 64 or full.finish_reason == "stop"
    flag = StopOnFlag(lambda: True, every_s=3600)
    ids = torch.zeros((2, 3), dtype=torch.long)
    assert flag(ids, None).tolist() == [True, True]
