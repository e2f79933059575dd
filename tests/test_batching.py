"""The padded scoring plan: literal prompt lengths in, the exact batches and their padding out."""

import pytest

from cai.backends import batching

# Prompt lengths (tokens) of 8 HHH comparisons x 2 orders, as one `cai eval hhh` call scores them (sorted);
# each prompt has 2 option tails of 3 tokens (" (A)" / " (B)").
HHH = [95, 95, 102, 102, 111, 111, 180, 180, 192, 192, 243, 243, 313, 313, 501, 501]


def cuts(lengths, pass_slots, tokens=16384, logit_rows=256, tails=2, tail_len=3):
    plan = batching.plan([(n, tails, tail_len) for n in lengths], tokens=tokens, logit_rows=logit_rows,
                         pass_slots=pass_slots)  # fmt: skip
    return [(r.start, r.stop) for r in plan]


def test_one_batch_for_all_wastes_more_than_half_the_slots():
    # The fewest passes (what the budgets alone give): one batch 501 wide.
    assert cuts(HHH, pass_slots=10**9) == [(0, 16)]
    assert batching.slots(HHH, [range(16)]) == 16 * 501 == 8016
    assert sum(HHH) == 3474  # so 4542 of 8016 slots (56.7%) are padding


def test_the_plan_cuts_where_a_pass_costs_less_than_the_padding_it_saves():
    plan = cuts(HHH, pass_slots=64)
    assert plan == [(0, 6), (6, 10), (10, 12), (12, 14), (14, 16)]
    slots = batching.slots(HHH, [range(a, b) for a, b in plan])
    # 6 x 111 + 4 x 192 + 2 x 243 + 2 x 313 + 2 x 501
    assert slots == 666 + 768 + 486 + 626 + 1002 == 3548
    assert slots - sum(HHH) == 74  # padding: 2.1% of the slots
    # no batch's padding exceeds what one more pass costs
    for a, b in plan:
        assert sum(max(HHH[a:b]) - n for n in HHH[a:b]) <= 64


def test_free_passes_give_no_padding_and_equal_lengths_stay_together():
    assert cuts([5, 5, 7, 7, 7, 9], pass_slots=0) == [(0, 2), (2, 5), (5, 6)]


def test_the_plan_is_the_cheapest_cut():
    lengths = [10, 11, 30, 31, 32, 90]
    cost = {  # every contiguous cut's slots + 20 per batch, by brute force
        tuple(c): batching.slots(lengths, [range(a, b) for a, b in c]) + 20 * len(c)
        for c in _all_cuts(len(lengths))
    }
    assert min(cost.values()) == cost[tuple(cuts(lengths, pass_slots=20))]
    assert cuts(lengths, pass_slots=20) == [(0, 2), (2, 5), (5, 6)]


def _all_cuts(n):
    if n == 0:
        yield []
        return
    for first in range(1, n + 1):
        for rest in _all_cuts(n - first):
            yield [(0, first)] + [(a + first, b + first) for a, b in rest]


def test_budgets_bound_each_batch_and_a_long_prompt_still_runs_alone():
    # 100 padded slots per batch at most: 3 x 30 fits, 4 x 30 does not; 200 > 100 runs alone.
    assert cuts([30] * 7 + [200], pass_slots=10**9, tokens=100) == [(0, 3), (3, 6), (6, 7), (7, 8)]
    # logit rows: tails x longest tail <= 12, so 2 prompts of 2 tails x 3 tokens per batch
    assert cuts([10] * 5, pass_slots=10**9, logit_rows=12) == [(0, 2), (2, 4), (4, 5)]


def test_unsorted_lengths_are_refused():
    with pytest.raises(ValueError, match="sorted by prompt length"):
        batching.plan([(5, 1, 1), (3, 1, 1)], tokens=100, logit_rows=10, pass_slots=0)


def test_an_options_logit_budget_splits_a_prompts_tails():
    parts = batching.split_group(0, [1, 2], [(0, [7, 8]), (1, [7, 9]), (2, [6])], logit_rows=4)
    assert [p.tails for p in parts] == [[(0, [7, 8]), (1, [7, 9])], [(2, [6])]]
