"""Tests that notice a broken method: each computation whose number we report, checked against values worked
out by hand on inputs chosen so that a realistic one-line breakage changes the answer (issue 24, item 22).
Each was checked by breaking the code it guards (the breakage is named in the docstring) and seeing it fail."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from cai import feedback, runs, sl
from cai.backends.base import ScriptedBackend
from cai.evals import ratings as R
from cai.evals.agreement import calibration
from cai.stages import SLConfig
from tests.helpers import seed
from tests.test_arena import play_turn, scripted_pool, setup  # noqa: F401  (setup is a fixture)


def test_calibration_counts_a_point_on_an_inner_edge_once():
    """Breakage: `lo <= p <= hi` (a point on an inner edge lands in two bins)."""
    # p = 0.75 and 1.0 give points (0.75, 1), (1.0, 1), (0.25, 0), (0.0, 0); with 4 bins the edges are
    # 0.25, 0.5, 0.75 (exact in binary). Each point belongs to the bin it opens: 0.0 -> [0, .25),
    # 0.25 -> [.25, .5), 0.75 and 1.0 -> [.75, 1]. ECE = 1/4*|0-0| + 1/4*|0-.25| + 2/4*|1-.875| = 0.125.
    bins, ece = calibration([0.75, 1.0], bins=4)
    assert [b["n"] for b in bins] == [1, 1, 0, 2]
    assert [b["mean_p"] for b in bins] == [0.0, 0.25, None, 0.875]
    assert [b["frequency"] for b in bins] == [0.0, 0.0, None, 1.0]
    assert ece == 0.125


def test_style_control_normalises_the_length_difference_by_the_total():
    """Breakage: the length feature as (a - b), not (a - b) / (a + b)."""
    # (a - b) / (a + b): 30 vs 10 tokens -> 0.5, 3 vs 1 -> 0.5, 0 vs 0 -> 0; headers 1 vs 0 -> 1.
    df = pd.DataFrame(
        [
            {"tokens_a": 30, "tokens_b": 10, "headers_a": 1, "headers_b": 0},
            {"tokens_a": 3, "tokens_b": 1, "headers_a": 0, "headers_b": 0},
            {"tokens_a": 0, "tokens_b": 0, "headers_a": 0, "headers_b": 2},
        ]
    ).assign(lists_a=0, lists_b=0, bold_a=0, bold_b=0)
    assert R.style_matrix(df).tolist() == [[0.5, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
    # In a fit: x (always A) wins 6 of 10 when 200 vs 100 tokens and 1 of 3 when 10 vs 20. Normalised, the two
    # groups sit at +-1/3 (+-1 after RMS scaling), so as in test_style_control_by_hand d + g = ln 1.5 and
    # d - g = -ln 2: g = ln(3)/2 = 0.5493, x - y = 400 log10(0.75)/2 = -24.99. Unnormalised (+100 vs -10) the
    # groups are not symmetric and the answer moves.
    rows = [(True, 200, 100)] * 6 + [(False, 200, 100)] * 4 + [(True, 10, 20)] + [(False, 10, 20)] * 2
    battles = pd.DataFrame(
        [{"model_a": "x", "model_b": "y", "winner": "model_a" if won else "model_b", "tokens_a": a,
          "tokens_b": b, "headers_a": 0, "headers_b": 0, "lists_a": 0, "lists_b": 0, "bold_a": 0, "bold_b": 0}
         for won, a, b in rows]
    )  # fmt: skip
    exact = R.RatingParams(reg=0.0)
    fit = R.style_controlled_fit(battles, exact)
    assert round(fit.coef["tokens"], 4) == round(math.log(3) / 2, 4) == 0.5493
    ratings = R.style_controlled(battles, exact)
    assert round(ratings["x"] - ratings["y"], 2) == round(400 * math.log10(0.75) / 2, 2) == -24.99


def test_the_stored_sft_target_is_the_last_revision(db):
    """Breakage: `Chain.response` (the stored `final`, SFT's target) taken from the first revision."""
    seed(db, n_prompts=1)
    made = iter(range(1, 100))

    def respond(prompt: str) -> str:
        return f" Revision {next(made)}." if prompt.endswith("\n\nRevision:") else " Draft."

    with runs.scripted("mine", ScriptedBackend(respond=respond)):
        run = runs.execute(db, runs.create_run(db, SLConfig(prompts="red", model="mine", constitution="test",
                                                            revisions=3)))  # fmt: skip
    assert run["status"] == "done", run["error"]
    rows, skipped = sl.sft_records(db, run["id"])
    assert (rows, skipped) == (
        [{"prompt": "\n\nHuman: Bad question 0?\n\nAssistant:", "completion": " Revision 3."}],
        0,
    )


def test_chain_of_thought_clamps_with_one_sample_too():
    """Breakage: the [0.4, 0.6] clamp applied only when there are several CoT samples."""

    def judge(prompt: str, option: str) -> float:  # (A) with probability 0.9 in the AB order, 0.1 in BA
        good_in_a = prompt.rfind("(A) [[[Hello!") > prompt.rfind("(B) [[[Hello!")
        return math.log(0.9 if (option == " (A)") == good_in_a else 0.1)

    backend = ScriptedBackend(respond=lambda p: " (A) is kinder.", score=judge)
    opts = feedback.LabelOptions(cot=True, cot_samples=1, clamp_low=0.4, clamp_high=0.6)
    kind = {
        "id": 1,
        "name": "kind",
        "kind": "comparison",
        "enabled": True,
        "text": "\nWhich is kinder? Options:",
    }
    [label] = feedback.label_pairs(
        backend, [feedback.PairItem(1, "\n\nHuman: Hi?\n\nAssistant:", "Hello!", "Go away.")], [kind], opts
    )
    # Each order reads p(Hello! better) = 0.9, clamped to 0.6; unclamped the label would be 0.9.
    assert [round(r.p, 6) for r in label.readings] == [0.6, 0.6]
    assert [round(r.p_option_a, 6) for r in label.readings] == [0.9, 0.1]
    assert label.p == pytest.approx(0.6, abs=1e-12)


def test_principle_draws_are_seeded_per_pair_and_per_chain():
    """Breakage: `random.Random()` (unseeded) in either draw: the pinned draws then match by chance with
    probability 1/6^20 (labels) and 1/2^30 (SL)."""
    names = [f"p{i}" for i in range(3)]
    draws = [feedback.draw_principles(names, 2, f"0:{i}") for i in range(20)]
    assert draws == [feedback.draw_principles(names, 2, f"0:{i}") for i in range(20)]
    # The seed is the string "<run seed>:<pair key>": Python's random.Random(str) is the reference.
    assert draws == [random.Random(f"0:{i}").sample(range(3), 2) for i in range(20)]
    assert draws[:3] == [[2, 0], [0, 2], [1, 2]]
    pool = [{"name": n, "critique": "c", "revision": "r"} for n in ("harm", "rude")]
    chains = [[p["name"] for p in sl.draw_principles(pool, 3, seed=5, prompt_id=i)] for i in range(10)]
    assert chains == [
        [p["name"] for p in sl.draw_principles(pool, 3, seed=5, prompt_id=i)] for i in range(10)
    ]
    reference = [random.Random(f"sl:5:{i}:0") for i in range(10)]
    assert chains == [[r.choice(["harm", "rude"]) for _ in range(3)] for r in reference]


def test_a_second_vote_is_refused_by_the_check_not_by_the_database(setup):  # noqa: F811
    """Breakage: the "already voted" check removed or keyed wrongly (the unique index alone would then
    stop it with an IntegrityError, or not at all once the index is gone)."""
    from cai import arena

    db, uid = setup
    [index] = [r[0] for r in db.execute("select name from sqlite_master where type = 'index' and tbl_name = 'votes'"
                                        " and sql like '%unique%'")]  # fmt: skip
    db.execute(f"drop index [{index}]")  # the check must stand on its own
    pool = scripted_pool({"quokka-7b": " a", "wombat-3b": " b"})
    bid = arena.start_battle(db, "help", uid, seed=2)["battle_id"]
    play_turn(db, bid, uid, "hi", pool)
    arena.cast_vote(db, bid, uid, 1, "A")
    with pytest.raises(arena.ArenaError, match="^you have already voted on turn 1$"):
        arena.cast_vote(db, bid, uid, 1, "B")
    assert [(r["turn"], r["winner"]) for r in db["votes"].rows] == [(1, "model_a")]
