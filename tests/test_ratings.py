"""Rating math against values worked out by hand, plus the `cai ratings` command."""

import json
import math

import numpy as np
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


def test_one_vote_cannot_make_a_2000_point_gap_under_the_default_prior():
    # Issue 28: one vote gave 1988.7 vs 11.3. Under the prior (reg = 0.005) the fit theta_x = t = -theta_y solves
    # sigma(-2t) = 2 * reg * t: t = 1.9570, i.e. 400 * t / ln 10 = 339.97 points either side of 1000.
    got = R.bradley_terry(battles(("x", "y", "model_a")))
    assert rounded(got) == {"x": 1339.97, "y": 660.03}
    t = (got["x"] - 1000.0) * math.log(10) / 400
    assert 1 / (1 + math.exp(2 * t)) == pytest.approx(2 * R.PRIOR_REG * t, rel=1e-6)


def arena_rank_reference(df: pd.DataFrame) -> dict[str, float]:
    """LMArena's arena-rank BradleyTerry fit, restated: minimise its loss, the count-weighted mean of
    softplus(d) - y * d over unique (a, b, outcome) rows, with no prior; ratings = 1000 + 400 / ln 10 * theta."""
    import torch

    models = sorted(set(df["model_a"]) | set(df["model_b"]))
    idx = {m: i for i, m in enumerate(models)}
    y = df["winner"].map({"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5})
    uniq = pd.DataFrame({"a": df["model_a"].map(idx), "b": df["model_b"].map(idx), "y": y}).value_counts()
    uniq = uniq.reset_index(name="w")
    a, b = (torch.tensor(uniq[c].to_numpy()) for c in ("a", "b"))
    yy, w = (torch.tensor(uniq[c].to_numpy(), dtype=torch.float64) for c in ("y", "w"))
    theta = torch.zeros(len(models), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():  # type: ignore[no-untyped-def]
        opt.zero_grad()
        d = theta[a] - theta[b]
        loss = torch.sum(w * (torch.nn.functional.softplus(d) - yy * d)) / w.sum()
        loss.backward()
        return loss

    opt.step(closure)
    t = theta.detach().numpy() - theta.detach().numpy().mean()
    return {m: 1000.0 + 400 / math.log(10) * t[i] for m, i in idx.items()}


def test_bt_on_4000_battles_equals_arena_rank_to_a_hundredth_of_a_point():
    # The prior is weak: on thousands of votes the ratings are the unpenalised (arena-rank) ones to 0.01 points.
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(8)]
    strength = np.linspace(0.0, 2.0, 8)
    a = rng.integers(0, 8, 4000)
    b = (a + rng.integers(1, 8, 4000)) % 8
    u = rng.random(4000)
    p_a = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    winner = np.where(u < 0.85 * p_a, "model_a", np.where(u < 0.85, "model_b", "tie"))
    df = pd.DataFrame({"model_a": [names[i] for i in a], "model_b": [names[i] for i in b], "winner": winner})
    ours, ref = R.bradley_terry(df), arena_rank_reference(df)
    assert max(ref.values()) - min(ref.values()) > 250  # a real spread, not ratings all near 1000
    assert max(abs(ours[m] - ref[m]) for m in names) < 0.01


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


def test_no_interval_below_the_minimum_of_votes_or_without_anything_to_resample():
    # Issue 28: one vote showed Elo 1002 vs 998 and BT 1988.7 vs 11.3, each with a "CI" whose ends were equal.
    one = battles(("x", "y", "model_a"))
    for method in ("elo", "bt", "rk"):
        got = R.rate(one, method, rounds=100, seed=0)
        assert [(r.model, r.ci_low, r.ci_high, r.note) for r in got] == [
            ("x", None, None, "not enough votes: n = 1 (an interval needs 10)"),
            ("y", None, None, "not enough votes: n = 1 (an interval needs 10)")]
    # 12 votes, all x over y: every resample is the same 12 votes, so the bootstrap has nothing to vary.
    same = battles(*[("x", "y", "model_a")] * 12)
    got = R.rate(same, "bt", rounds=100, seed=0)
    assert [(r.ci_low, r.note) for r in got] == [(None, "no interval: the resamples did not vary (nothing to resample)")] * 2
    # Without bootstrap rounds nobody asked for an interval: no note.
    assert [r.note for r in R.rate(one, "bt")] == [None, None]
    # Enough varied votes: an interval of positive width, no note; the minimum is a parameter.
    varied = battles(*[("x", "y", "model_a")] * 8, *[("x", "y", "model_b")] * 4)
    got = R.rate(varied, "bt", rounds=100, seed=0)
    assert all(r.note is None and r.ci_high - r.ci_low > 1 for r in got)
    assert R.rate(varied, "bt", rounds=100, seed=0, min_votes=13)[0].note == "not enough votes: n = 12 (an interval needs 13)"
    fig = R.figure2(R.rate(one, "bt", rounds=50), R.rate(one, "bt", rounds=50))
    assert fig.data[0].error_x.array is None  # no model has an interval: no bars at all


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
        ("x", 1044.13, None, 4), ("y", 955.87, None, 4)]  # 1044.37 / 955.63 without the prior
    assert main(["ratings", "--votes", str(path), "--method", "elo", "--bootstrap", "10", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got[0]) == {"model", "rating", "ci_low", "ci_high", "n", "provisional", "note"}
    assert (got[0]["ci_low"], got[0]["note"]) == (None, "not enough votes: n = 4 (an interval needs 10)")
    path.write_text(json.dumps(rows * 3))
    assert main(["ratings", "--votes", str(path), "--method", "elo", "--bootstrap", "10", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got[0]["ci_low"] < got[0]["ci_high"] and got[0]["note"] is None
    assert main(["ratings", "--votes", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
