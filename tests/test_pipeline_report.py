"""The pipeline report's pure pieces, with values worked out by hand (cai.pipeline.report)."""

from __future__ import annotations

import pytest

from cai.pipeline.report import AS, NOT_AS, UNSURE, bootstrap_diff, length_baseline, verdict, wilson


def test_wilson_interval_matches_the_textbook_values():
    assert wilson(8, 10) == (0.4902, 0.9433)  # p = 0.8, n = 10: the usual 95 % Wilson interval
    assert wilson(2.5, 4) == (0.2194, 0.9081)  # half credits count
    assert wilson(0, 0) == (None, None)
    lo, hi = wilson(0, 5)
    assert lo == 0.0 and 0.43 < hi < 0.44


@pytest.mark.parametrize("lo, hi, reference, expected", [
    (0.51, 0.7, 0.5, AS), (0.3, 0.49, 0.5, NOT_AS), (0.4, 0.6, 0.5, UNSURE), (0.5, 0.6, 0.5, UNSURE),
    (None, None, 0.5, UNSURE), (-0.2, -0.1, 0.0, NOT_AS),
])
def test_verdict_needs_the_whole_interval_on_one_side(lo, hi, reference, expected):
    assert verdict(lo, hi, reference) == expected


def test_length_baseline_credits_the_shorter_chosen_answer_and_half_a_tie():
    pairs = [{"chosen": "ab", "rejected": "abc"}, {"chosen": "ab", "rejected": "xy"},
             {"chosen": "abcd", "rejected": "a"}, {"chosen": "a", "rejected": "abcdef"}]
    assert length_baseline(pairs) == 0.625  # (1 + 0.5 + 0 + 1) / 4
    assert length_baseline([]) is None


def test_bootstrap_difference_is_seeded_and_centred_on_the_mean_difference():
    delta, lo, hi = bootstrap_diff([0.0, 1.0], [1.0, 2.0])
    assert (delta, lo, hi) == (1.0, 0.0, 2.0)
    assert bootstrap_diff([0.0, 1.0], [1.0, 2.0]) == (delta, lo, hi)
    assert bootstrap_diff([], [1.0]) == (None, None, None)
    same = bootstrap_diff([0.5] * 5, [0.5] * 5)
    assert same == (0.0, 0.0, 0.0)
