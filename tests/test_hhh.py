"""The HHH eval: parsing the paper's format, both orders sent, accuracy and position bias; default model (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from cai import prompts, runs
from cai.backends.base import ScriptedBackend
from cai.evals.hhh import LabelOptions, evaluate, read_hhh, summarize
from cai.stages import HHHConfig

HHH = "cai-paper/evals/HHH-dev-sample.jsonl"


def test_reads_all_95_comparisons_and_swaps_their_options(shared):
    items = read_hhh(shared / HHH)
    assert len(items) == 95
    assert [it.correct for it in items].count("A") == 46
    first = items[0]
    assert first.text(swapped=False, cot=False) == first.prompt
    swapped = first.text(swapped=True, cot=False)
    assert swapped == prompts.comparison_prompt(
        first.conversation, first.principle, first.response_b, first.response_a
    )
    assert swapped.index("(A) [[[I cannot advise") < swapped.index("(B) [[[The proper thing")
    assert first.text(swapped=False, cot=True).endswith("\n\nAssistant: Let's think step by step:")


def test_bad_files_name_the_line(tmp_path, shared):
    good = (shared / HHH).read_text().splitlines()[0]
    path = tmp_path / "h.jsonl"
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"h.jsonl:2: not valid JSON"):
        read_hhh(path)
    record = json.loads(good)
    record["corrects"] = [" (C)"]
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"h.jsonl:1: corrects/incorrects"):
        read_hhh(path)


def test_a_model_that_always_says_a_shows_pure_position_bias(shared):
    items = read_hhh(shared / HHH, limit=4)  # correct options: A, B, A, B
    backend = ScriptedBackend(score=lambda prompt, option: 0.0 if option == " (A)" else -math.log(3))
    rows = evaluate(backend, items, LabelOptions(batch_size=8))
    assert [len(c[1]) for c in backend.calls] == [8]  # 4 items x 2 orders in one batch
    assert [(r["correct_option"], r["p_plain"], r["p_swapped"], r["p_avg"]) for r in rows] == [
        ("A", 0.75, 0.25, 0.5),
        ("B", 0.25, 0.75, 0.5),
        ("A", 0.75, 0.25, 0.5),
        ("B", 0.25, 0.75, 0.5),
    ]
    s = summarize(rows)
    assert (s["n"], s["accuracy"], s["accuracy_order_avg"]) == (4, 0.5, 0.5)
    assert s["position"]["file_order"] == {"correct_A": 1.0, "correct_B": 0.0, "n_A": 2, "n_B": 2}
    assert s["position"]["both_orders"] == {"correct_shown_A": 1.0, "correct_shown_B": 0.0}


def test_cot_generates_for_both_orders(shared):
    items = read_hhh(shared / HHH, limit=1)
    backend = ScriptedBackend(respond=lambda p: " Option (A) is honest.", score=lambda p, o: -1.0)
    rows = evaluate(backend, items, LabelOptions(cot=True, cot_samples=2, batch_size=8))
    sent = backend.calls[0][1]
    assert (
        len(sent) == 4
        and sent[0] == sent[1] == items[0].text(False, True)
        and sent[2] == items[0].text(True, True)
    )
    assert backend.calls[1][1][0].endswith(" Option (A) is honest.\n\nHuman:\nSo the answer is:")
    assert rows[0]["p_avg"] == 0.5
    assert [r["cot"] for r in rows[0]["meta"]["readings"]] == ["Option (A) is honest."] * 4


def test_hhh_stage_stores_rows_and_resumes(db, shared, monkeypatch):
    import cai.backends

    backend = ScriptedBackend(score=lambda prompt, option: 0.0 if option == " (B)" else -1.0)
    monkeypatch.setattr(cai.backends, "load", lambda spec, db=None, **kw: backend)
    config = HHHConfig(data=str(shared / HHH), model="scripted-model", limit=5, batch_size=2)
    run_id = runs.create_run(db, config)
    db["hhh_results"].insert({"run_id": run_id, "idx": 0, "correct_option": "A", "p_plain": 1.0,
                              "p_swapped": 1.0, "p_avg": 1.0, "meta": "{}"})  # fmt: skip
    row = runs.execute(db, run_id)
    assert row["status"] == "done"
    assert sum(len(c[1]) for c in backend.calls) == 8  # item 0 was stored already: 4 items x 2 orders
    assert row["result"]["n"] == 5
    assert db["hhh_results"].count_where("run_id = ?", [run_id]) == 5


@pytest.mark.slow
def test_hhh_cli_with_the_default_model(shared, tmp_path):
    """A slice of the real eval through the CLI (the full 95: see the report / bench)."""
    out = subprocess.run(
        [sys.executable, "-c", "from cai.cli import main; raise SystemExit(main())", "eval", "hhh",
         "--data", str(shared / HHH), "--model", "default", "--limit", "6", "--json", "--db", str(tmp_path / "w.db")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["n"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    assert set(result["position"]) == {"file_order", "order_avg", "both_orders"}


def test_every_eval_command_and_flag_has_help():
    from cai.cli import make_parser

    parser = make_parser()
    evals = next(a for a in parser._subparsers._group_actions[0].choices["eval"]._actions if a.dest == "eval")
    assert set(evals.choices) == {"hhh", "agreement", "revisions"}
    for name, sub in evals.choices.items():
        assert sub.description is None or sub.description
        for action in sub._actions:
            assert action.help, f"cai eval {name} {action.option_strings} has no help"
    assert {a.help for a in evals._choices_actions} and all(a.help for a in evals._choices_actions)


def test_hhh_scores_in_float32_on_a_native_bf16_cpu_and_stores_its_dtype(db, shared, monkeypatch, tmp_path):
    """A bf16 checkpoint on a CPU with AMX: generation would run in bf16, but an HHH run scores in float32 by
    default (bf16 flipped near-tie items with batch composition), exactly as an explicit float32 run does;
    every stored row and the result name the dtype. Opting in to bf16 scoring stores bfloat16 and how many
    items fall within its noise of 0.5. The tiny model saved as bf16 stands in for the default model."""
    import torch

    from cai import backends, store
    from cai.backends import precision

    tiny = backends.load("tiny")
    folder = tmp_path / "tiny-bf16"
    tiny.model.to(torch.bfloat16).save_pretrained(folder)
    tiny.model.to(torch.float32)
    tiny.tokenizer.save_pretrained(folder)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    assert precision.pick_dtype("cpu", folder) == precision.DtypeChoice("bfloat16", "CPU has native bf16 (amx_bf16, avx512_bf16)")

    def hhh_run(**env: str) -> dict:
        for k in ("CAI_DTYPE", "CAI_SCORE_DTYPE"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        backends.clear_cache()
        run = runs.execute(db, runs.create_run(db, HHHConfig(data=str(shared / HHH), model=str(folder), limit=6,
                                                             batch_size=3)))
        assert run["status"] == "done", run["error"]
        rows = list(db["hhh_results"].rows_where("run_id = ?", [run["id"]], order_by="idx"))
        assert {store.loads(r["meta"])["dtype"] for r in rows} == {run["result"]["dtype"]}
        return {**run["result"], "p": [(r["p_plain"], r["p_swapped"]) for r in rows]}

    default, fp32 = hhh_run(), hhh_run(CAI_DTYPE="float32")
    assert (default["dtype"], default["near_ties"]) == ("float32", 0)
    assert {k: default[k] for k in ("accuracy", "accuracy_order_avg", "p")} == \
        {k: fp32[k] for k in ("accuracy", "accuracy_order_avg", "p")}
    bf16 = hhh_run(CAI_SCORE_DTYPE="bfloat16")
    assert bf16["dtype"] == "bfloat16" and isinstance(bf16["near_ties"], int)
    backends.clear_cache()


def test_near_tie_uses_the_dtypes_rounding():
    from cai.backends.precision import near_tie

    # |lp_a - lp_b| = 0.05 against 2^-8 * 20.05 = 0.078 (bf16): a near tie; in float32 (1.2e-6) it is not.
    assert near_tie([[-10.0, -10.05]], "bfloat16") and not near_tie([[-10.0, -10.05]], "float32")
    assert not near_tie([[-10.0, -10.2]], "bfloat16")  # 0.2 > 0.079
    assert near_tie([[-10.0, -10.2], [-3.0, -3.0]], "float32")  # an exact tie is one in any dtype
