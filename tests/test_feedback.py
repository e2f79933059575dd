"""AI feedback labels: the soft-label math with literal values, and the exact prompts sent (scripted)."""

from __future__ import annotations

import math

import pytest

from cai import prompts
from cai.backends.base import ScriptedBackend
from cai.feedback import (
    LabelOptions,
    PairItem,
    clamp,
    comparison_exemplars,
    comparison_principles,
    draw_principles,
    ensemble,
    first_p,
    label_pairs,
    option_p,
    order_average,
    to_preference,
)

PROMPT = "\n\nHuman: Hi?\n\nAssistant:"
KIND = {"id": 1, "name": "kind", "kind": "comparison", "enabled": True, "text": "\nWhich is kinder? Options:"}
SAFE = {"id": 2, "name": "safe", "kind": "comparison", "enabled": True, "text": "\nWhich is safer? Options:"}
OFF = {"id": 3, "name": "off", "kind": "comparison", "enabled": False, "text": "\nWhich is longer? Options:"}
CRIT = {
    "id": 4,
    "name": "crit",
    "kind": "critique",
    "enabled": True,
    "critique": "c",
    "revision": "r",
    "text": "",
}
VERSION = {
    "id": 9,
    "name": "test",
    "version": 1,
    "principles": [KIND, SAFE, OFF, CRIT],
    "exemplars": [
        {
            "kind": "comparison",
            "position": 1,
            "data": {"prompt": "P1", "corrects": ["g1"], "incorrects": ["b1"]},
        },
        {
            "kind": "comparison",
            "position": 0,
            "data": {"prompt": "P0", "corrects": ["g0"], "incorrects": ["b0"]},
        },
        {"kind": "comparison_cot", "position": 0, "data": {"prompt": "C0 {}"}},
    ],
}


def test_option_p_is_the_normalised_probability_of_the_two_options():
    assert option_p(-1.0, -2.0) == 0.7310585786300049
    assert option_p(-3.0, -3.0) == 0.5
    assert option_p(math.log(0.3), math.log(0.1)) == pytest.approx(0.75, abs=1e-15)
    # Far apart log-probs neither overflow nor give NaN.
    assert (option_p(0.0, -1000.0), option_p(-1000.0, 0.0)) == (1.0, 0.0)


def test_order_average_cancels_a_pure_position_bias():
    assert first_p(0.75, "AB") == 0.75
    assert first_p(0.75, "BA") == 0.25
    # The model says (A) with 0.75 whatever is shown there: no preference left after averaging.
    assert order_average(0.75, 0.75) == 0.5
    # The first response wins in both orders.
    assert order_average(0.75, 0.25) == 0.75
    with pytest.raises(ValueError, match="order"):
        first_p(0.5, "BB")


def test_clamp_and_ensemble():
    assert [clamp(p, 0.4, 0.6) for p in (0.0, 0.45, 0.99)] == [0.4, 0.45, 0.6]
    assert ensemble([0.25, 0.75, 1.0]) == 0.6666666666666666
    with pytest.raises(ValueError, match="reversed"):
        clamp(0.5, 0.6, 0.4)
    with pytest.raises(ValueError, match="zero"):
        ensemble([])


def test_principle_draws_are_seeded_per_pair():
    assert draw_principles(["a", "b", "c"], 2, "0:1") == [0, 2]
    assert draw_principles(["a", "b", "c"], 2, "0:2") == [1, 2]
    assert draw_principles(["a", "b"], 3, "7:x") == [0, 0, 1]  # more than there are: with replacement


def test_to_preference_orients_the_pair():
    assert to_preference("p", "a", "b", 0.75, {}) == {
        "prompt": "p",
        "chosen": "a",
        "rejected": "b",
        "p": 0.75,
        "meta": {},
    }
    assert to_preference("p", "a", "b", 0.25, {"x": 1}) == {
        "prompt": "p",
        "chosen": "b",
        "rejected": "a",
        "p": 0.75,
        "meta": {"x": 1},
    }


def test_principles_and_exemplars_of_a_version():
    assert [p["name"] for p in comparison_principles(VERSION)] == ["kind", "safe"]
    assert [p["name"] for p in comparison_principles(VERSION, ["off"])] == ["off"]
    with pytest.raises(ValueError, match="'nope'"):
        comparison_principles(VERSION, ["nope"])
    assert [e["prompt"] for e in comparison_exemplars(VERSION, 5, cot=False)] == ["P0", "P1"]
    assert comparison_exemplars(VERSION, 1, cot=True) == [{"prompt": "C0 {}"}]


def biased_backend() -> ScriptedBackend:
    """A feedback model that always says (A) with probability 0.75 (log-odds log 3)."""
    return ScriptedBackend(score=lambda prompt, option: 0.0 if option == " (A)" else -math.log(3))


def test_plain_label_sends_both_orders_and_averages_them():
    backend = biased_backend()
    [label] = label_pairs(backend, [PairItem(1, PROMPT, "Hello!", "Go away.")], [KIND], LabelOptions())
    expected_ab = (
        "\n\nConsider the following conversation between a human and an assistant:\n\nHuman: Hi?\n\n\n"
        "Which is kinder? Options:\n (A) [[[Hello!]]]\n (B) [[[Go away.]]]\n\nThe answer is:"
    )
    expected_ba = expected_ab.replace("Hello!", "@").replace("Go away.", "Hello!").replace("@", "Go away.")
    assert backend.calls == [("option_logprobs", [expected_ab, expected_ba])]
    assert label.p == 0.5
    meta = label.meta()
    assert meta["principles"] == ["kind"]
    assert [(r["order"], r["p_option_a"], r["p"], r["cot"]) for r in meta["readings"]] == [
        ("AB", 0.75, 0.75, None),
        ("BA", 0.75, 0.25, None),
    ]
    assert meta["readings"][0]["logprobs"] == [0.0, -1.0986122886681098]


def test_one_order_keeps_the_bias_and_ensembling_draws_k_principles():
    backend = biased_backend()
    opts = LabelOptions(both_orders=False, ensemble=2, batch_size=3)
    items = [PairItem(k, PROMPT, "x", "y") for k in (1, 2)]
    labels = label_pairs(backend, items, [KIND, SAFE], opts)
    assert [lab.p for lab in labels] == [0.75, 0.75]
    assert [len(c[1]) for c in backend.calls] == [3, 1]  # 4 readings in batches of 3
    assert [sorted(lab.meta()["principles"]) for lab in labels] == [["kind", "safe"], ["kind", "safe"]]


def test_chain_of_thought_prompts_clamping_and_samples():
    def judge(prompt: str, option: str) -> float:
        good_in_a = prompt.rfind("(A) [[[Hello!") > prompt.rfind("(B) [[[Hello!")
        return math.log(0.9 if (option == " (A)") == good_in_a else 0.1)

    backend = ScriptedBackend(respond=lambda p: " (A) is kinder.\n\nHuman: ignored", score=judge)
    opts = LabelOptions(cot=True, cot_samples=2, clamp_low=0.4, clamp_high=0.6)
    [label] = label_pairs(backend, [PairItem(1, PROMPT, "Hello!", "Go away.")], [KIND], opts)
    cot_ab = prompts.comparison_cot_prompt(PROMPT, KIND, "Hello!", "Go away.")
    cot_ba = prompts.comparison_cot_prompt(PROMPT, KIND, "Go away.", "Hello!")
    assert backend.calls[0] == ("generate", [cot_ab, cot_ab, cot_ba, cot_ba])
    answer_ab = cot_ab + " (A) is kinder.\n\nHuman:\nSo the answer is:"
    assert backend.calls[1][1][0] == answer_ab
    assert label.p == 0.6  # 0.9 in every reading, clamped to 0.6
    assert [r.cot for r in label.readings] == ["(A) is kinder."] * 4
    assert [r.sample for r in label.readings] == [0, 1, 0, 1]


def test_few_shot_exemplars_prefix_the_comparison():
    backend = biased_backend()
    opts = LabelOptions(both_orders=False)
    ex = comparison_exemplars(VERSION, 1, cot=False)
    label_pairs(backend, [PairItem(1, PROMPT, "a", "b")], [KIND], opts, ex)
    sent = backend.calls[0][1][0]
    assert sent == prompts.comparison_prompt(PROMPT, KIND, "a", "b", ex)
    assert sent.startswith("\n\nConsider the following conversation between a human and an assistant:\n\nP0")


# ----------------------------------------------------------------------------- runners (scripted backend, real DB)
def _stage_db(db, monkeypatch, backend):
    import cai.backends
    from cai import constitution, data

    constitution.seed_default(db)
    data.create_prompt_set(db, "rt", "red-team", ["\n\nHuman: one?\n\nAssistant:", "\n\nHuman: two?\n\nAssistant:",
                                                  "\n\nHuman: three?\n\nAssistant:"])  # fmt: skip
    monkeypatch.setattr(cai.backends, "load", lambda spec, db=None, **kw: backend)


def test_pairs_runner_sends_each_prompt_twice_and_stores_pairs(db, monkeypatch):
    from cai import runs
    from cai.stages import PairsConfig

    answers = iter([" A1", " B1", " A2", " B2", " A3", " B3"])
    backend = ScriptedBackend(respond=lambda p: next(answers))
    _stage_db(db, monkeypatch, backend)
    row = runs.execute(db, runs.create_run(db, PairsConfig(prompts="rt", model="m", batch_size=2)))
    assert row["status"] == "done" and row["result"]["pairs"] == 3
    assert backend.calls == [
        ("generate", ["\n\nHuman: one?\n\nAssistant:"] * 2 + ["\n\nHuman: two?\n\nAssistant:"] * 2),
        ("generate", ["\n\nHuman: three?\n\nAssistant:"] * 2),
    ]
    pairs = [
        (r["response_a"], r["response_b"]) for r in db["response_pairs"].rows_where(order_by="prompt_id")
    ]
    assert pairs == [("A1", "B1"), ("A2", "B2"), ("A3", "B3")]


def test_label_runner_cancels_between_batches_and_resumes(db, monkeypatch):
    from cai import data, runs
    from cai.stages import LabelConfig, PairsConfig

    backend = ScriptedBackend(respond=lambda p: " yes")
    _stage_db(db, monkeypatch, backend)
    pairs_run = runs.execute(db, runs.create_run(db, PairsConfig(prompts="rt", model="m")))["id"]
    label_run = runs.create_run(db, LabelConfig(pairs=pairs_run, feedback_model="m", batch_size=2, name="ai"))

    def cancel_after_first_batch(prompt: str, option: str) -> float:
        db["runs"].update(label_run, {"cancel_requested": 1})
        return 0.0 if option == " (A)" else -math.log(3)

    backend.score = cancel_after_first_batch
    backend.calls.clear()
    assert runs.execute(db, label_run)["status"] == "cancelled"
    # Cancel is checked between backend batches: one call (pair 1, both orders), none of pairs 2-3 read.
    assert [len(c[1]) for c in backend.calls] == [2]
    assert db["feedback_labels"].count_where("run_id = ?", [label_run]) == 0  # a batch is stored whole or not
    assert not db["pref_sets"].count_where("name = 'ai'")
    db["feedback_labels"].insert({"run_id": label_run, "pair_id": 1, "p": 0.5, "principles": "[]",
                                  "meta": "{}", "created_at": "x"})  # as if pair 1 had been stored before
    backend.calls.clear()
    backend.score = lambda prompt, option: 0.0 if option == " (A)" else -math.log(3)
    runs.prepare_resume(db, label_run)
    row = runs.execute(db, label_run)
    assert row["status"] == "done" and row["result"]["labels"] == 3
    assert [len(c[1]) for c in backend.calls] == [2, 2]  # pairs 2 and 3 only, both orders each
    assert [p["p"] for p in data.list_pairs(db, "ai")] == [0.5, 0.5, 0.5]
    assert row["constitution_version_id"] is not None
