"""The preference model: the soft-target loss by hand, the collator, data mixing, and two tiny training steps."""

from __future__ import annotations

import math

import pytest
import torch

from cai.train.reward import (
    SoftPreferenceCollator,
    margin_of,
    mix,
    pm_text,
    preference_loss,
    soft_preference_loss,
    split_heldout,
    to_rows,
)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_soft_loss_equals_the_hand_computed_value():
    r_c, r_r, p = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.8, 0.5])
    # Pair 1: delta 1, p 0.8; pair 2: delta 0, p 0.5 -> log 2.
    by_hand = (-(0.8 * log_sigmoid(1.0) + 0.2 * log_sigmoid(-1.0)) + math.log(2)) / 2
    assert by_hand == pytest.approx(0.6032044340390841, abs=1e-15)
    assert soft_preference_loss(r_c, r_r, p).item() == pytest.approx(by_hand, abs=1e-6)


def test_hard_and_margin_variants():
    r_c, r_r, p = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.8, 0.5])
    hard = -log_sigmoid(1.0)  # pair 1: p rounds to 1; pair 2 is a tie (p = 0.5): no side, left out
    assert preference_loss(r_c, r_r, p, "hard").item() == pytest.approx(hard, abs=1e-6)
    flipped = (-log_sigmoid(1.0) - log_sigmoid(-2.0)) / 2  # p 0.3 rounds to 0: the rejected is preferred
    r3 = (torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 5.0]), torch.tensor([0.8, 0.3, 0.5]))
    assert preference_loss(*r3, "hard").item() == pytest.approx(flipped, abs=1e-6)
    ties_only = preference_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]), "hard")
    assert ties_only.item() == 0.0
    assert margin_of(0.8) == pytest.approx(math.log(4), abs=1e-12)
    assert (margin_of(0.5), margin_of(1.0), margin_of(0.0)) == (0.0, 5.0, -5.0)
    margin = (-log_sigmoid(1.0 - math.log(4)) - log_sigmoid(0.0)) / 2
    assert preference_loss(r_c, r_r, p, "margin").item() == pytest.approx(margin, abs=1e-6)
    with pytest.raises(ValueError, match="soft, hard, margin"):
        preference_loss(r_c, r_r, p, "nope")


def test_the_trainers_soft_loss_uses_p_itself_not_p_rounded():
    """The loss the trainer dispatches (`preference_loss(kind="soft")`, SoftRewardTrainer's default) on
    p = 0.8: -(0.8 log sigma(1) + 0.2 log sigma(-1)) = 0.51326; with p rounded to 1 it would be 0.31326."""
    r_c, r_r, p = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.8])
    assert -(0.8 * log_sigmoid(1.0) + 0.2 * log_sigmoid(-1.0)) == pytest.approx(0.5132616875182228, abs=1e-12)
    assert preference_loss(r_c, r_r, p, "soft").item() == pytest.approx(0.5132616875182228, abs=1e-6)
    import inspect

    from cai.train.reward import SoftRewardTrainer

    assert inspect.signature(SoftRewardTrainer.__init__).parameters["loss_kind"].default == "soft"


def test_pair_credit_gives_ties_half():
    from cai.train.reward import pair_credit

    r_c, r_r = torch.tensor([1.0, 0.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])
    p = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.5])
    # chosen higher: 1; scores tied: 1/2; rejected higher: 0; labelled a tie: 1/2 whatever the scores
    assert pair_credit(r_c, r_r, p).tolist() == [1.0, 0.5, 0.0, 0.5, 0.5]


def test_soft_loss_with_p_one_is_trls_loss():
    r_c, r_r = torch.tensor([0.3, -1.2]), torch.tensor([0.1, 0.4])
    trl = -torch.nn.functional.logsigmoid(r_c - r_r).mean()
    assert soft_preference_loss(r_c, r_r, torch.ones(2)).item() == pytest.approx(trl.item(), abs=1e-7)


def test_collator_carries_p():
    out = SoftPreferenceCollator(pad_token_id=0)(
        [
            {"chosen_ids": [1, 2], "rejected_ids": [3], "p": 0.75},
            {"chosen_ids": [4], "rejected_ids": [5, 6], "p": 1},
        ]
    )
    assert out["input_ids"].tolist() == [[1, 2], [4, 0], [3, 0], [5, 6]]
    assert out["p"].tolist() == [0.75, 1.0]


def test_mix_keeps_the_human_ratio_and_split_is_seeded():
    ai = [{"i": f"a{i}"} for i in range(6)]
    human = [{"i": f"h{i}"} for i in range(10)]
    picked = mix(ai, human, 0.5, seed=0)
    assert (sum(x["i"][0] == "a" for x in picked), sum(x["i"][0] == "h" for x in picked)) == (6, 6)
    assert len(mix(ai, human, 0.0, 0)) == 6 and len(mix(ai, human, 1.0, 0)) == 10
    # No ratio (the default): every pair of both sets, none thrown away.
    everything = mix(ai, human, None, seed=0)
    assert sorted(x["i"] for x in everything) == sorted(x["i"] for x in ai + human)
    assert [x["i"] for x in mix(ai, [], 0.5, 3)] == [x["i"] for x in mix(ai, [], 0.5, 3)]
    train, held = split_heldout(human, 0.2, seed=0)
    assert (len(train), len(held)) == (8, 2)
    assert split_heldout(human, 0.2, seed=0) == (train, held)


def test_rows_are_full_texts():
    pair = {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello.", "rejected": "Go.", "p": 0.7}
    assert pm_text(pair["prompt"], pair["chosen"]) == "\n\nHuman: hi\n\nAssistant: Hello."
    assert to_rows([pair]) == [
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: Hello.",
            "rejected": "\n\nHuman: hi\n\nAssistant: Go.",
            "p": 0.7,
        }
    ]


def test_soft_reward_trainer_two_steps_on_the_tiny_model(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig

    from cai.backends import model_path
    from cai.train.reward import SoftRewardTrainer

    path = model_path("tiny")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    before = {k: v.clone() for k, v in model.named_parameters()}
    pairs = [
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "Hello there", "rejected": "Go away", "p": 0.8}
    ] * 4
    args = RewardConfig(
        output_dir=str(tmp_path), max_length=64, per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3,
        use_cpu=True, bf16=False, report_to="none", logging_steps=1, disable_tqdm=True, save_strategy="no",
    )  # fmt: skip
    trainer = SoftRewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(to_rows(pairs)),
        processing_class=tok,
        data_collator=SoftPreferenceCollator(pad_token_id=tok.pad_token_id),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    changed = [k for k, v in model.named_parameters() if not torch.equal(before[k], v)]
    assert "score.weight" in changed and len(changed) > 1


def test_pad_id_keeps_token_zero():
    from types import SimpleNamespace

    from cai.train.reward import pad_id

    assert pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=2)) == 0
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
