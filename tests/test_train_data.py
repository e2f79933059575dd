"""What the trainers train on and what they store: rows longer than max_length cut (not dropped) and counted,
the stored counts equal to the rows trained (steps x batch), the soft DPO loss with each pair's own p, the mean
and last loss both stored, ties out of the hard losses, the PM mix using every pair, and seeds that hold."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from cai import data, models, runs
from cai.stages import DPOStageConfig, PMConfig, SFTStageConfig
from cai.train import lengths

SHORT = "\n\nHuman: Hi?\n\nAssistant:"
LONG = "\n\nHuman: " + "Tell me a long story about the sea and the ships. " * 12 + "\n\nAssistant:"


def pairs(n_short: int, n_long: int, p: float = 0.9) -> list[dict]:
    """Short pairs (well under 64 tokens) and pairs whose prompt alone is far over 64 tokens."""
    out = [
        {"prompt": SHORT, "chosen": f"Hello {i}.", "rejected": f"Go away {i}.", "p": p}
        for i in range(n_short)
    ]
    out += [{"prompt": LONG, "chosen": f"Sure {i}.", "rejected": f"No {i}.", "p": p} for i in range(n_long)]
    return out


def run(db, config):
    row = runs.execute(db, runs.create_run(db, config))
    assert row["status"] == "done", (row["error"], runs.logs(db, row["id"], tail=5))
    return row


def logged(db, run_id: int) -> list[str]:
    return [g["line"] for g in runs.logs(db, run_id, tail=1000)]


# ----------------------------------------------------------------------------- cutting long rows
def test_keep_end_keeps_the_end_and_a_leading_bos():
    assert lengths.cut([9, 1, 2, 3, 4, 5], 4, bos_id=9) == [9, 3, 4, 5]
    assert lengths.cut([1, 2, 3, 4, 5], 4, bos_id=9) == [2, 3, 4, 5]
    assert lengths.cut([1, 2, 3], 4, bos_id=None) == [1, 2, 3]
    assert lengths.take(["a", "b", "c", "d"], lengths.keep_end(4, 3, keep_first=True)) == ["a", "c", "d"]
    data_ = lengths.Lengths("pairs", given=5, trained=4, truncated=2, completion_cut=1, max_length=64)
    assert data_.as_dict()["dropped"] == 1
    assert lengths.summary(data_.as_dict()) == (
        "4 of 5 pairs trained, 1 left out (no tokens to learn from within max_length 64); 2 cut to max_length 64"
        " (start of the conversation left out), 1 of them with part of a response cut too"
    )
    assert lengths.summary(lengths.Lengths("rows", 6, 6, 0, 0, 64).as_dict()) == (
        "6 of 6 rows trained; none longer than max_length 64"
    )
    with pytest.raises(ValueError, match="no rows left to train on: all 3 are longer than max_length 8"):
        lengths.refuse_empty(lengths.Lengths("rows", 3, 0, 3, 3, 8))


@pytest.mark.timeout(300)
def test_pm_trains_every_pair_cut_to_max_length_and_stores_what_it_trained(db):
    wordy = [
        {"prompt": SHORT, "chosen": "Well. " * 80 + f"Yes {i}.", "rejected": f"No {i}.", "p": 0.9}
        for i in (1, 2)
    ]
    data.create_pref_set(db, "ai", "ai", "harmless", pairs(5, 3) + wordy)
    data.create_pref_set(db, "held", "ai", "harmless", pairs(2, 0, p=0.5))
    row = run(db, PMConfig(ai_prefs="ai", heldout_prefs="held", model="tiny", name="pm-long", epochs=1.0,
                           batch_size=2, max_length=64, learning_rate=1e-3))  # fmt: skip
    result = row["result"]
    # TRL's RewardTrainer would have dropped the 3 long pairs and the 2 with a long answer (3 steps on 5).
    # Cut from the left, the long prompts lose their start; the long answers lose theirs too.
    assert result["data"] == {"unit": "pairs", "given": 10, "trained": 10, "truncated": 5, "completion_cut": 2,
                              "max_length": 64, "dropped": 0}  # fmt: skip
    assert (result["train_pairs"], result["steps"]) == (10, 5)  # 5 steps x batch 2 = 10 pairs
    assert result["steps"] * 2 == result["train_pairs"]
    assert "training data: 10 of 10 pairs trained; 5 cut to max_length 64" in "\n".join(logged(db, row["id"]))
    # Held-out pairs labelled as ties count half whatever the PM says; the log names the set's real source.
    assert result["heldout_accuracy"] == 0.5
    assert result["heldout_set"] == "ai pairs of set held"
    assert any(x.endswith("on 2 ai pairs of set held") for x in logged(db, row["id"]))
    # Mean and last loss, both stored and named; the mean is TRL's train_loss over the logged steps.
    losses = [float(x.split('"loss": ')[1].split(",")[0]) for x in logged(db, row["id"]) if '"loss": ' in x]
    assert len(losses) == 5
    assert result["train_loss_last"] == pytest.approx(losses[-1], abs=1e-3)
    assert result["train_loss_mean"] == pytest.approx(sum(losses) / 5, abs=1e-3)
    [trl_mean] = [float(x.split('"train_loss": ')[1].split(",")[0].rstrip("}")) for x in logged(db, row["id"])
                  if '"train_loss": ' in x]  # fmt: skip
    assert result["train_loss_mean"] == pytest.approx(trl_mean, abs=1e-3)  # TRL's own train_loss
    meta = models.get_model(db, "pm-long")["meta"]
    assert (meta["train_loss_mean"], meta["train_loss_last"]) == (
        result["train_loss_mean"],
        result["train_loss_last"],
    )
    assert meta["data"] == result["data"]


@pytest.mark.timeout(300)
def test_pm_with_one_seed_gives_the_same_weights_byte_for_byte(db):
    data.create_pref_set(db, "ai", "ai", "harmless", pairs(4, 0))
    weights = []
    for name in ("pm-a", "pm-b"):
        run(db, PMConfig(ai_prefs="ai", model="tiny", name=name, max_steps=2, batch_size=2, max_length=64,
                         seed=4, learning_rate=1e-3))  # fmt: skip
        weights.append(load_file(f"{models.get_model(db, name)['path']}/model.safetensors"))
    assert sorted(weights[0]) == sorted(weights[1])
    for k in weights[0]:
        assert weights[0][k].numpy().tobytes() == weights[1][k].numpy().tobytes(), k


@pytest.mark.timeout(300)
def test_dpo_trains_pairs_whose_prompt_fills_max_length(db):
    data.create_pref_set(db, "ai", "ai", "harmless", pairs(3, 2))
    row = run(db, DPOStageConfig(policy="tiny", prefs="ai", name="dpo-long", max_steps=5, batch_size=1,
                                 max_length=48, learning_rate=1e-3))  # fmt: skip
    result = row["result"]
    # TRL's DPOTrainer would have dropped the 2 pairs whose prompt alone fills max_length.
    assert result["data"] == {"unit": "pairs", "given": 5, "trained": 5, "truncated": 2, "completion_cut": 0,
                              "max_length": 48, "dropped": 0}  # fmt: skip
    assert (result["pairs"], result["steps"], result["mean_p"]) == (5, 5, 0.9)
    assert "training data: 5 of 5 pairs trained; 2 cut to max_length 48" in "\n".join(logged(db, row["id"]))
    assert models.get_model(db, "dpo-long")["meta"]["data"] == result["data"]


@pytest.mark.timeout(300)
def test_sft_trains_rows_whose_prompt_fills_max_length_and_counts_cut_completions(db):
    run_id = int(db["runs"].insert({"kind": "sl", "status": "done", "config": '{"model": "tiny"}'}).last_pk)
    finals = [(SHORT, "Kept."), (SHORT, "Also kept."), (LONG, "Sure."), (SHORT, "Very long answer. " * 30)]
    for i, (prompt, final) in enumerate(finals):
        db["chains"].insert({"run_id": run_id, "prompt_id": i, "sample": 0, "mode": "critique",
                             "prompt": prompt, "final": final, "flags": "[]"})  # fmt: skip
    row = run(db, SFTStageConfig(chains=run_id, model="tiny", name="sft-long", epochs=1.0, batch_size=1,
                                 max_length=48, save_steps=100))  # fmt: skip
    result = row["result"]
    # TRL would have dropped row 3 (its prompt fills max_length) and cut row 4's answer without a word.
    assert result["data"] == {"unit": "rows", "given": 4, "trained": 4, "truncated": 2, "completion_cut": 1,
                              "max_length": 48, "dropped": 0}  # fmt: skip
    assert (result["rows"], result["steps"]) == (4, 4)
    assert math.isfinite(result["train_loss_mean"]) and math.isfinite(result["train_loss_last"])
    assert "4 of 4 rows trained; 2 cut to max_length 48 (start of the conversation left out), 1 of them" in (
        "\n".join(logged(db, row["id"]))
    )


def test_dpo_refuses_clearly_when_no_pair_is_left(db):
    data.create_pref_set(db, "ties", "ai", "harmless", pairs(2, 0, p=0.5))
    row = runs.execute(db, runs.create_run(db, DPOStageConfig(policy="tiny", prefs="ties", soft="threshold",
                                                              threshold=0.5)))  # fmt: skip
    assert row["status"] == "failed"
    assert row["error"] == "ValueError: no pairs of 'ties' have p >= 0.5 (ties left out); lower the threshold"


def test_the_run_page_shows_the_training_data_counts():
    from ui.dashboard import data_html

    result = {"data": {"unit": "pairs", "given": 8, "trained": 8, "truncated": 3, "completion_cut": 0,
                       "max_length": 64, "dropped": 0}}  # fmt: skip
    assert data_html(result) == (
        "<p>Training data: 8 of 8 pairs trained; 3 cut to max_length 64 (start of the conversation left out)</p>"
    )
    assert data_html({"pairs": 3}) == ""


# ----------------------------------------------------------------------------- soft-label DPO
def completion_logps(model, batch) -> torch.Tensor:
    """Sum of log-probs of the completion tokens, by a plain forward (not TRL's fused head)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = torch.gather(logp, 2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token * batch["completion_mask"][:, 1:]).sum(dim=1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("setup", ["reference model", "precomputed reference", "lora"])
def test_soft_dpo_loss_of_a_fixed_batch_is_the_formula_with_each_pairs_p(tmp_path, setup):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from cai.backends import model_path
    from cai.train.dpo import SoftDPOCollator, SoftDPOTrainer, dpo_rows

    path, beta = model_path("tiny"), 0.5
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = [{"prompt": SHORT, "chosen": "Hello there.", "rejected": "Go away.", "p": 0.6},
            {"prompt": SHORT, "chosen": "Happy to help.", "rejected": "No.", "p": 0.95}]  # fmt: skip
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=["sigmoid"], max_length=64,
                     precompute_ref_log_probs=setup == "precomputed reference", per_device_train_batch_size=2, use_cpu=True, bf16=False,
                     report_to="none", disable_tqdm=True)  # fmt: skip
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear") if setup == "lora" else None
    trainer = SoftDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(dpo_rows(rows)),
                             processing_class=tok, data_collator=SoftDPOCollator(pad_token_id=tok.pad_token_id,
                             max_length=64), peft_config=lora)  # fmt: skip
    model = trainer.model  # under LoRA the PEFT model; its reference is itself with the adapters off
    with torch.no_grad():  # move the policy (its trained weights) away from the reference, so that D != 0
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param, generator=torch.Generator().manual_seed(0)))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    policy, reference = completion_logps(model, batch), completion_logps(ref, batch)
    delta = (policy[:2] - reference[:2]) - (policy[2:] - reference[2:])
    assert delta.abs().min() > 0.01
    by_hand = [-(p * math.log(1 / (1 + math.exp(-beta * d))) + (1 - p) * math.log(1 / (1 + math.exp(beta * d))))
               for p, d in zip([0.6, 0.95], delta.tolist(), strict=True)]  # fmt: skip
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    assert loss.item() == pytest.approx(sum(by_hand) / 2, abs=1e-4)
    # The same batch with hard labels (TRL's sigmoid loss) is another number.
    hard = [-math.log(1 / (1 + math.exp(-beta * d))) for d in delta.tolist()]
    assert abs(sum(hard) / 2 - loss.item()) > 1e-3


@pytest.mark.timeout(300)
def test_dpo_with_p_one_and_p_point_six_trains_differently(db):
    results = {}
    for p in (1.0, 0.6):
        data.create_pref_set(db, f"p{p}", "ai", "harmless", pairs(4, 0, p=p))
        row = run(db, DPOStageConfig(policy="tiny", prefs=f"p{p}", name=f"dpo-{p}", max_steps=3, batch_size=4,
                                     max_length=64, learning_rate=1e-3))  # fmt: skip
        losses = [
            float(x.split('"loss": ')[1].split(",")[0]) for x in logged(db, row["id"]) if '"loss": ' in x
        ]
        results[p] = (losses, load_file(f"{row['result']['path']}/model.safetensors"))
    (hard, w_hard), (soft, w_soft) = results[1.0], results[0.6]
    assert hard[0] == soft[0] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at step 1
    assert abs(hard[1] - soft[1]) > 1e-3 and abs(hard[2] - soft[2]) > 1e-3  # after one update they part
    assert any(not torch.equal(w_hard[k], w_soft[k]) for k in w_hard)
