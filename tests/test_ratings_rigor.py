"""Rao-Kupper, style control, provisional flags and drop-k robustness against hand computations."""

import itertools
import json
import math

import pandas as pd
import pytest

from cai.cli import main
from cai.evals import ratings as R
from cai.evals.ratings.battles import _encode, _unique_counts
from cai.evals.ratings.ties import _rk_grad

EXACT = R.RatingParams(reg=0.0)


def battles(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def rounded(d: dict[str, float], places: int = 2) -> dict[str, float]:
    return {k: round(v, places) for k, v in d.items()}


# The synthetic battles of tests/test_ratings.py: x beats y twice, one tie, y beats x once.
TIED = battles(("x", "y", "model_a"), ("x", "y", "model_a"), ("x", "y", "tie"), ("x", "y", "model_b"))


def test_rao_kupper_two_players_by_hand():
    # Two players are a saturated model: s(d - eta) = 2/4 and s(-d - eta) = 1/4, so
    # d = (logit(1/2) - logit(1/4)) / 2 = ln(3) / 2 and eta = ln(3) / 2 (theta = sqrt 3).
    # On the Elo scale: 400 * log10(3) / 2 = 95.42 apart, centred on 1000 -> 1047.71 / 952.29.
    fit = R.rao_kupper_fit(TIED, EXACT)
    assert round(fit.theta, 6) == round(math.sqrt(3), 6)
    assert rounded(R.rao_kupper(TIED, EXACT)) == {"x": 1047.71, "y": 952.29}
    assert round(1000 + 400 * math.log10(3) / 4, 2) == 1047.71
    # BT gives the same data a smaller gap (the tie as half a win each: 2.5 : 1.5 -> 88.74 apart).
    assert rounded(R.bradley_terry(TIED, EXACT)) == {"x": 1044.37, "y": 955.63}


def test_rao_kupper_without_ties_is_bradley_terry():
    df = battles(("x", "y", "model_a"), ("y", "x", "model_b"), ("x", "y", "model_a"), ("x", "y", "model_b"))
    assert R.rao_kupper_fit(df, EXACT).theta == 1.0
    assert rounded(R.rao_kupper(df, EXACT)) == rounded(R.bradley_terry(df, EXACT)) == {"x": 1095.42, "y": 904.58}


def test_rao_kupper_three_players_satisfy_the_likelihood_equations():
    df = battles(*[("a", "b", "model_a")] * 3, ("a", "b", "tie"), ("a", "b", "model_b"),
                 *[("b", "c", "model_a")] * 3, ("b", "c", "tie"), ("c", "b", "model_a"), ("a", "c", "tie"))
    fit = R.rao_kupper_fit(df, EXACT)
    # a-b and b-c mirror each other, so b sits in the middle; the fit zeroes the score equations.
    assert [round(float(b), 4) for b in fit.beta] == [0.5905, 0.0, -0.5905]
    assert round(fit.theta, 4) == 1.8744
    matchups, outcomes, _ = _encode(df)
    pairs, ys, counts = _unique_counts(matchups, outcomes)
    x = pd.Series([*fit.beta, math.log(fit.theta)]).to_numpy()
    assert max(abs(g) for g in _rk_grad(x, pairs, ys, counts, 3, 0.0)) < 1e-8


def style_battles() -> pd.DataFrame:
    # x always sits in position A. When x's answer is twice as long (200 vs 100 tokens) it wins 6 of 10;
    # when it is half as long it wins 1 of 3. Overall x wins 7 of 13.
    rows = []
    for won, tok_a, tok_b in [(True, 200, 100)] * 6 + [(False, 200, 100)] * 4 + [(True, 100, 200)] + [(False, 100, 200)] * 2:
        rows.append({"model_a": "x", "model_b": "y", "winner": "model_a" if won else "model_b",
                     "tokens_a": tok_a, "tokens_b": tok_b, "headers_a": 0, "headers_b": 0,
                     "lists_a": 0, "lists_b": 0, "bold_a": 0, "bold_b": 0})
    return pd.DataFrame(rows)


def test_style_control_by_hand():
    # The length difference (a-b)/(a+b) is +-1/3; divided by its RMS (1/3) it is +-1. Two groups and two
    # parameters (d = x - y, g = length) are saturated: d + g = logit(6/10) = ln 1.5, d - g = logit(1/3) = -ln 2.
    # d = ln(0.75)/2 -> x - y = 400 log10(0.75) / 2 = -24.99 points; g = ln(3)/2 = 0.5493.
    df = style_battles()
    fit = R.style_controlled_fit(df, EXACT)
    assert {k: round(v, 4) for k, v in fit.coef.items()} == {"tokens": 0.5493, "headers": 0.0, "lists": 0.0, "bold": 0.0}
    assert rounded(R.style_controlled(df, EXACT)) == {"x": 987.51, "y": 1012.49}
    # Without control x leads: 7:6 -> 400 log10(7/6) = 26.78 apart.
    assert rounded(R.bradley_terry(df, EXACT)) == {"x": 1013.39, "y": 986.61}
    got = R.rate(df, "bt", params=EXACT, style_control=True)
    assert [(r.model, round(r.rating, 2), round(r.rating_raw, 2), r.rank, r.rank_raw, r.rank_change) for r in got] == [
        ("y", 1012.49, 986.61, 1, 2, 1), ("x", 987.51, 1013.39, 2, 1, -1)]


def test_style_counts_and_sources():
    text = "# Title\n\nSome **bold** words.\n\n- one\n- two\n1. three\n"
    assert R.style_counts(text) == {"tokens": 11, "headers": 1, "lists": 3, "bold": 1}
    meta = {"sum_assistant_a_tokens": 10, "sum_assistant_b_tokens": 5, "header_count_a": {"h1": 1, "h2": 1},
            "header_count_b": {"h1": 0}, "list_count_a": {"ordered": 0, "unordered": 2},
            "list_count_b": {"ordered": 1, "unordered": 0}, "bold_count_a": {"**": 1, "__": 0},
            "bold_count_b": {"**": 0, "__": 0}}
    df = R.with_style(pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "tie", "conv_metadata": meta}]))
    assert df[["tokens_a", "tokens_b", "headers_a", "lists_b", "bold_a", "bold_b"]].iloc[0].tolist() == [10, 5, 2, 1, 1, 0]
    texts = R.with_style(pd.DataFrame([{"model_a": "x", "model_b": "y", "winner": "tie", "response_a": text, "response_b": "ok"}]))
    assert texts[["tokens_a", "lists_a", "tokens_b"]].iloc[0].tolist() == [11, 3, 1]
    with pytest.raises(ValueError, match="style control needs each answer's style"):
        R.style_controlled(TIED)


def test_provisional_flag_below_the_threshold():
    df = battles(*[("x", "y", "model_a")] * 3, *[("y", "z", "model_a")] * 2)
    got = {r.model: (r.n, r.provisional) for r in R.rate(df, "bt", provisional_below=4)}
    assert got == {"x": (3, True), "y": (5, False), "z": (2, True)}
    assert not any(r.provisional for r in R.rate(df, "rk", provisional_below=0))


def test_drop_k_two_players_by_hand():
    # x leads 3:1; removing one x win leaves 2:1 (x still ahead), two leave 1:1 (level): k = 2.
    df = battles(("x", "y", "model_a"), ("y", "x", "model_a"), ("x", "y", "model_a"), ("x", "y", "model_a"))
    for method in ("bt", "rk"):
        got = R.drop_k(df, method, EXACT)
        assert (got.top, got.k, got.challenger, got.removed) == ("x", 2, "y", [0, 2])


def test_drop_k_is_never_below_the_brute_force_minimum():
    df = battles(("a", "b", "model_a"), ("a", "b", "model_a"), ("a", "c", "model_a"), ("b", "c", "model_a"),
                 ("c", "b", "tie"), ("b", "a", "model_b"), ("a", "c", "tie"), ("c", "a", "model_b"))
    got = R.drop_k(df, "bt")

    def top_holds(keep: pd.DataFrame) -> bool:
        r = R.bradley_terry(keep)
        return r.get("a", -1) > max(v for k, v in r.items() if k != "a") + 1e-9

    exact = next(k for k in range(1, len(df) + 1)
                 if any(not top_holds(df.drop(index=list(c))) for c in itertools.combinations(df.index, k)))
    assert got.top == "a" and got.k is not None and got.k >= exact
    assert not top_holds(df.drop(index=got.removed))  # the reported removal really dethrones a
    assert (exact, got.k) == (4, 4)


def test_drop_k_by_dimension_counts_positions_within_each_dimension():
    # Interleaved dimensions: helpfulness is the by-hand case above (k = 2, its rows 0 and 2); harmlessness
    # has p ahead of q 2:1, so removing one of p's two wins (its rows 0 or 2) levels them: k = 1.
    rows = [("x", "y", "model_a", "helpfulness"), ("p", "q", "model_a", "harmlessness"),
            ("y", "x", "model_a", "helpfulness"), ("q", "p", "model_a", "harmlessness"),
            ("x", "y", "model_a", "helpfulness"), ("p", "q", "model_a", "harmlessness"),
            ("x", "y", "model_a", "helpfulness")]
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "dimension"])
    got = R.drop_k_by_dimension(df, "bt")
    assert list(got) == ["harmlessness", "helpfulness"]
    help_, harm = got["helpfulness"], got["harmlessness"]
    assert (help_.top, help_.k, help_.challenger, help_.removed) == ("x", 2, "y", [0, 2])
    assert (harm.top, harm.k, harm.challenger) == ("p", 1, "q") and harm.removed in ([0], [2])
    assert R.drop_k_by_dimension(df.drop(columns="dimension").iloc[[0, 2, 4, 6]], "bt")["all"].removed == [0, 2]


def test_cli_ratings_rk_style_and_drop_k(tmp_path, capsys):
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(TIED.to_dict(orient="records")))
    assert main(["ratings", "--votes", str(path), "--method", "rk", "--bootstrap", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(r["model"], round(r["rating"], 2), r["n"], r["provisional"]) for r in got] == [
        ("x", 1047.49, 4, True), ("y", 952.51, 4, True)]  # 1047.71 / 952.29 without the prior (issue 28)
    style = tmp_path / "style.jsonl"
    style.write_text("\n".join(json.dumps(r) for r in style_battles().to_dict(orient="records")))
    assert main(["ratings", "--votes", str(style), "--style-control", "--bootstrap", "0", "--provisional-below", "10",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(r["model"], round(r["rating"], 1), round(r["rating_raw"], 1), r["rank_change"], r["provisional"])
            for r in got] == [("y", 1012.5, 986.6, 1, False), ("x", 987.5, 1013.4, -1, False)]
    assert main(["ratings", "--votes", str(path), "--bootstrap", "0", "--drop-k", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["drop_k"]["k"] == 1 and got["drop_k"]["top"] == "x" and len(got["ratings"]) == 2
    assert main(["ratings", "--votes", str(path), "--style-control"]) == 2
    assert "style control needs each answer's style" in capsys.readouterr().err
