"""One contract, two engines: transformers and a served vLLM agree on the default model (Gemma 3 270M, float32).

Greedy continuations must match token for token. Option log-probs must agree within OPTION_TOL nats:
both engines score the same token ids in float32 with different kernels, so they differ only by
rounding (at most 1.3e-5 nats over these 11 options, measured here; the tolerance leaves 15x room).
The vLLM side is the `vllm` backend: a real vLLM OpenAI-compatible server (one per session, see
conftest) spoken to by the served backend, so this is the served backend's contract too. Both sides run in float32 explicitly (in bf16 the engines differed by up to 0.14 nats).
"""

from __future__ import annotations

import pytest

from cai import backends
from cai.backends import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

OPTION_TOL = 2e-4  # nats, absolute

PROMPTS = [
    "\n\nHuman: What is the capital of France?\n\nAssistant:",
    "\n\nHuman: hi\n\nAssistant:",
    "\n\nHuman: Name three colors.\n\nAssistant:",
    "\n\nHuman: What is 2 + 2?\n\nAssistant:",
]
OPTIONS = [
    [" Paris", " London", " The capital is Paris."],
    [" Hello", " no"],
    [" Red", " red, green"],
    [" 4", " 5"],
]


@pytest.fixture(scope="module")
def hf():
    import torch

    return backends.load("default", dtype=torch.float32)


@pytest.fixture(scope="module")
def vllm(vllm_default):
    return vllm_default


def test_greedy_outputs_agree(hf, vllm):
    params = SamplingParams(max_new_tokens=24)
    a, b = hf.generate(PROMPTS, params), vllm.generate(PROMPTS, params)
    assert [c.text for c in a] == [c.text for c in b]
    assert [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in a] == [
        (c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in b
    ]
    assert a[0].text == " The capital of France is Paris."
    assert a[0].finish_reason == "stop"


def test_option_logprobs_agree(hf, vllm):
    a, b = hf.option_logprobs(PROMPTS, OPTIONS), vllm.option_logprobs(PROMPTS, OPTIONS)
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a == pytest.approx(row_b, abs=OPTION_TOL)
        assert row_a.index(max(row_a)) == row_b.index(max(row_b))
    assert a[0][0] > a[0][1]  # Paris beats London


def test_vllm_length_stop_and_seed(vllm):
    [short] = vllm.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3))
    assert (short.text, short.completion_tokens, short.finish_reason) == (" The capital of", 3, "length")
    [cut] = vllm.generate(PROMPTS[:1], SamplingParams(max_new_tokens=24, stop=(" France",)))
    assert (cut.text, cut.finish_reason) == (" The capital of", "stop")
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7)
    first = vllm.generate(PROMPTS[:2] * 2, params)
    assert first == vllm.generate(PROMPTS[:2] * 2, params)
    assert first[0].text != first[2].text or first[1].text != first[3].text  # one seed, distinct draws


def test_served_stream_grows_to_the_greedy_text(vllm):
    from cai.backend_pool import stream_text

    params = SamplingParams(max_new_tokens=24)
    pieces = list(stream_text(vllm, PROMPTS[0], params))
    assert len(pieces) > 3  # token by token, not one piece
    assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:], strict=False))
    assert pieces[-1] == " The capital of France is Paris."
