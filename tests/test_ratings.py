"""Rating math against values worked out by hand, plus the `cai ratings` command."""

import json
import math

import pandas as pd
import pytest

from cai.cli import main
from cai.evals import ratings as R

EXACT = R.RatingParams(reg=0.0)  # no penalty: the textbook MLE


def battles(*rows: tuple[str, str, str], dimension: str | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])
    if dimension:
        df["dimension"] = dimension
    return df


def rounded(d: dict[str, float], places: int = 2) -> dict[str, float]:
    return {k: round(v, places) for k, v in d.items()}


def test_bt_two_players_three_wins_to_one():
    # P(x beats y) = 3/4 -> odds 3 -> 400 * log10(3) = 190.85 points apart, centred on 1000.
    df = battles(("x", "y", "model_a"), ("y", "x", "model_b"), ("x", "y", "model_a"), ("x", "y", "model_b"))
    assert rounded(R.bradley_terry(df, EXACT)) == {"x": 1095.42, "y": 904.58}
    assert round(400 * math.log10(3) / 2, 2) == 95.42


def test_bt_ties_count_half_a_win_each():
    # x: 2 wins + half of 1 tie = 2.5; y: 1 win + 0.5 = 1.5 -> 400 * log10(5/3) = 88.74 apart.
    df = battles(("x", "y", "model_a"), ("x", "y", "model_a"), ("x", "y", "tie"), ("x", "y", "model_b"))
    assert rounded(R.bradley_terry(df, EXACT)) == {"x": 1044.37, "y": 955.63}
    both_bad = df.replace({"tie": "tie (bothbad)"})
    assert rounded(R.bradley_terry(both_bad, EXACT)) == {"x": 1044.37, "y": 955.63}


def test_bt_three_players_chain_and_cycle():
    # a-b 3:1 and b-c 3:1 never meet a-c: each link is log(3) apart, so 190.85 points per link.
    chain = battles(*[("a", "b", "model_a")] * 3, ("a", "b", "model_b"), *[("b", "c", "model_a")] * 3, ("b", "c", "model_b"))
    assert rounded(R.bradley_terry(chain, EXACT)) == {"a": 1190.85, "b": 1000.0, "c": 809.15}
    cycle = battles(("a", "b", "model_a"), ("b", "c", "model_a"), ("c", "a", "model_a"))
    assert rounded(R.bradley_terry(cycle, EXACT)) == {"a": 1000.0, "b": 1000.0, "c": 1000.0}


def test_bt_undefeated_model_stays_finite_with_the_default_penalty():
    got = R.bradley_terry(battles(("x", "y", "model_a")))
    assert 1900 < got["x"] < 2100 and got["x"] + got["y"] == pytest.approx(2000)


def test_elo_online_updates_by_hand():
    # Vote 1: equal ratings, E = 0.5, x wins: +-4 * 0.5 = 2 -> 1002 / 998.
    # Vote 2: y (as model_a) wins: E_y = 1 / (1 + 10^(4/400)) = 0.494244 -> y += 4 * 0.505756 = 2.023.
    df = battles(("x", "y", "model_a"), ("y", "x", "model_a"))
    assert rounded(R.elo(df), 3) == {"x": 999.977, "y": 1000.023}
    # A tie between equals moves nothing; K, scale and init are parameters.
    assert R.elo(battles(("x", "y", "tie"))) == {"x": 1000.0, "y": 1000.0}
    params = R.RatingParams(k=32, init=1500)
    assert R.elo(battles(("x", "y", "model_b")), params) == {"x": 1484.0, "y": 1516.0}


def test_bootstrap_is_reproducible_with_a_seed():
    df = battles(("x", "y", "model_a"), ("x", "y", "model_a"), ("x", "y", "tie"), ("x", "y", "model_b"))
    first = R.bootstrap(df, "bt", 20, seed=7, params=EXACT)
    again = R.bootstrap(df, "bt", 20, seed=7, params=EXACT)
    other = R.bootstrap(df, "bt", 20, seed=8, params=EXACT)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert list(first.columns) == ["x", "y"] and len(first) == 20
    elo_a = R.bootstrap(df, "elo", 5, seed=1)
    pd.testing.assert_frame_equal(elo_a, R.bootstrap(df, "elo", 5, seed=1))


def test_rate_gives_intervals_sorted_best_first():
    df = battles(*[("x", "y", "model_a")] * 30, *[("x", "y", "model_b")] * 10, *[("y", "z", "model_a")] * 25,
                 *[("y", "z", "model_b")] * 15)
    got = R.rate(df, "bt", rounds=200, seed=0)
    assert [r.model for r in got] == ["x", "y", "z"]
    assert [r.n for r in got] == [40, 80, 40]
    for r in got:
        assert r.ci_low < r.rating < r.ci_high
    assert R.rate(df, "elo")[0].ci_low is None


def test_rate_by_dimension_and_win_rate_matrix():
    df = pd.concat([battles(("x", "y", "model_a"), dimension="helpfulness"),
                    battles(("x", "y", "model_b"), ("y", "x", "tie"), dimension="harmlessness")])
    by_dim = R.rate_by_dimension(df, method="bt", params=EXACT)
    assert list(by_dim) == ["harmlessness", "helpfulness"]
    assert [r.model for r in by_dim["harmlessness"]] == ["y", "x"]
    m = R.win_rate_matrix(df)
    # x vs y: win, loss, tie -> 1.5 / 3.
    assert m.loc["x", "y"] == 0.5 and m.loc["y", "x"] == 0.5 and math.isnan(m.loc["x", "x"])
    m2 = R.win_rate_matrix(battles(("a", "b", "model_a"), ("a", "b", "model_a"), ("b", "a", "tie"), ("b", "c", "model_b")))
    assert round(m2.loc["a", "b"], 4) == 0.8333
    assert m2.loc["c", "b"] == 1.0 and math.isnan(m2.loc["a", "c"])


def test_bad_battles_are_refused_with_the_row():
    with pytest.raises(ValueError, match=r"votes: row 2: winner 'left' is not one of"):
        R.elo(battles(("x", "y", "tie"), ("x", "y", "left")))
    with pytest.raises(ValueError, match="missing column"):
        R.bradley_terry(pd.DataFrame({"model_a": ["x"], "winner": ["tie"]}))
    with pytest.raises(ValueError, match="row 1: a model cannot battle itself"):
        R.bradley_terry(battles(("x", "x", "tie")))


def test_read_votes_formats_and_errors(tmp_path):
    rows = [{"model_a": "x", "model_b": "y", "winner": "model_a", "anony": True}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[0]) + "\n")
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    assert len(R.read_votes(tmp_path / "a.json")) == 1
    assert len(R.read_votes(tmp_path / "b.jsonl")) == 2
    assert list(R.read_votes(tmp_path / "c.csv")["winner"]) == ["model_a"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        R.read_votes(tmp_path / "bad.jsonl")


def test_figure2_plots_each_model_with_interval_bars():
    help_ = [R.Rating("x", 1050.0, 1000.0, 1080.0, 10), R.Rating("y", 950.0, 900.0, 990.0, 10)]
    harm = [R.Rating("x", 1020.0, 1010.0, 1040.0, 10), R.Rating("y", 980.0, 960.0, 1000.0, 10)]
    fig = R.figure2(help_, harm)
    trace = fig.data[0]
    assert list(trace.x) == [1050.0, 950.0] and list(trace.y) == [1020.0, 980.0]
    assert list(trace.error_x.array) == [30.0, 40.0] and list(trace.error_x.arrayminus) == [50.0, 50.0]
    assert fig.layout.yaxis.title.text == "Harmlessness rating"


def test_cli_ratings_prints_json(tmp_path, capsys):
    path = tmp_path / "battles.json"
    rows = [{"model_a": "x", "model_b": "y", "winner": w} for w in ("model_a", "model_a", "tie", "model_b")]
    path.write_text(json.dumps(rows))
    assert main(["ratings", "--votes", str(path), "--bootstrap", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(r["model"], round(r["rating"], 2), r["ci_low"], r["n"]) for r in got] == [
        ("x", 1044.37, None, 4), ("y", 955.63, None, 4)]
    assert main(["ratings", "--votes", str(path), "--method", "elo", "--bootstrap", "10", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got[0]) == {"model", "rating", "ci_low", "ci_high", "n", "provisional"} and got[0]["ci_low"] is not None
    assert main(["ratings", "--votes", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
