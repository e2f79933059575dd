"""Agreement of AI soft labels with human choices: accuracy, calibration, per-principle accuracy, position bias.

A feedback model labels each human pair (one comparison principle drawn per pair, seeded, from the
chosen ones; both option orders), and the label p(chosen better) is compared with the human's choice.

Stored for the UI: per pair, a row in `agreement_pairs` (run_id, pair_id, principle, p_chosen = the
order-averaged p(human-chosen better), p_first = p(chosen) with chosen shown as (A), p_second = with
chosen shown as (B) or null with one order, meta = raw readings); per run, `runs.result` =
{"n", "agreement", "mean_p_chosen", "ece", "calibration": [{"lo", "hi", "n", "mean_p", "frequency"}],
"per_principle": {name: {"n", "agreement"}}, "position": {"chosen_shown_A", "chosen_shown_B",
"mean_p_option_A"}, "prefs", "feedback_model"}. Agreement gives ties (p within `tie_band` of 0.5)
half credit, and reports them (`ties`, `agreement_decisive` over the rest). Judge rigor (see
cai.evals.consistency): per pair `consistent` (both orders give one verdict), `consistency` =
{"n", "rate", "per_principle"}, and `kappa` = Cohen's kappa of the AI's pick against the human's pick
by position, one per scored order (so the human side is not constant).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cai.evals import consistency as C
from cai.feedback import LabelOptions, PairItem, comparison_principles, label_pairs


def credit(p: float, band: float = 0.0) -> float:
    return C.credit(p, band)


def calibration(ps: list[float], bins: int = 10) -> tuple[list[dict[str, Any]], float | None]:
    """Calibration bins and expected calibration error of p(chosen better) against human choices.

    Each pair counts twice, as (p, outcome 1) for the chosen response and (1 - p, outcome 0) for the
    rejected one, so the bins cover [0, 1] and a model that always says 0.5 is perfectly calibrated.
    ECE = sum over bins of (n_bin / N) * |frequency - mean predicted p|.
    """
    points = [(p, 1.0) for p in ps] + [(1.0 - p, 0.0) for p in ps]
    out, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not inside:
            out.append({"lo": lo, "hi": hi, "n": 0, "mean_p": None, "frequency": None})
            continue
        mean_p = sum(p for p, _ in inside) / len(inside)
        freq = sum(y for _, y in inside) / len(inside)
        ece += len(inside) / len(points) * abs(freq - mean_p)
        out.append(
            {"lo": lo, "hi": hi, "n": len(inside), "mean_p": round(mean_p, 4), "frequency": round(freq, 4)}
        )
    return out, (round(ece, 4) if points else None)


def summarize(rows: list[dict[str, Any]], bins: int = 10, band: float = C.TIE_BAND) -> dict[str, Any]:
    """The run's result from its per-pair rows (see the module docstring for the shape)."""
    ps = [r["p_chosen"] for r in rows]
    cal, ece = calibration(ps, bins)
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by[r["principle"]].append(credit(r["p_chosen"], band))
    firsts = [credit(r["p_first"], band) for r in rows if r["p_first"] is not None]
    seconds = [credit(r["p_second"], band) for r in rows if r["p_second"] is not None]
    option_a = [r["p_first"] for r in rows if r["p_first"] is not None]
    option_a += [1.0 - r["p_second"] for r in rows if r["p_second"] is not None]
    flags = [C.consistent(r["p_first"], r["p_second"], band) for r in rows]
    decisive = [credit(p, band) for p in ps if C.verdict(p, band) != "tie"]
    human, ai = C.position_labels(rows, band)
    return {
        "n": len(rows),
        "agreement": _mean([credit(p, band) for p in ps]),
        "tie_band": band,
        "ties": len(ps) - len(decisive),
        "agreement_decisive": _mean(decisive),
        "kappa": C.cohen_kappa(human, ai),
        "consistency": {
            **C.rate(flags),
            "per_principle": C.by_group((r["principle"], f) for r, f in zip(rows, flags, strict=True)),
        },
        "mean_p_chosen": _mean(ps),
        "ece": ece,
        "calibration": cal,
        "per_principle": {k: {"n": len(v), "agreement": _mean(v)} for k, v in sorted(by.items())},
        "position": {
            "chosen_shown_A": _mean(firsts),
            "chosen_shown_B": _mean(seconds),
            "mean_p_option_A": _mean(option_a),
        },
    }


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def pair_row(pair_id: int, label: Any, band: float = C.TIE_BAND, inconsistent: str = "average") -> dict[str, Any]:
    """One agreement_pairs row from a label of (chosen, rejected); `inconsistent` = "tie" sets
    p_chosen = 0.5 when the two orders disagree."""
    first = [r.p for r in label.readings if r.order == "AB"]
    second = [r.p for r in label.readings if r.order == "BA"]
    p_first = sum(first) / len(first) if first else None
    p_second = sum(second) / len(second) if second else None
    flag = C.consistent(p_first, p_second, band)
    return {
        "pair_id": pair_id,
        "principle": label.readings[0].principle,
        "p_chosen": C.resolve(label.p, flag, inconsistent),
        "p_first": p_first,
        "p_second": p_second,
        "consistent": None if flag is None else int(flag),
        "meta": label.meta(),
    }


def run_stage(ctx: Any) -> dict[str, Any]:
    """Stage "agreement": label each human pair, store its row, then summarize; resumes past stored rows."""
    from cai import backends, constitution, data, models, store

    cfg, db = ctx.config, ctx.db
    version = constitution.resolve_version(db, cfg.constitution, cfg.constitution_version)
    names = [n.strip() for n in cfg.principles.split(",") if n.strip()]
    principles = comparison_principles(version, names)
    opts = LabelOptions(ensemble=1, both_orders=cfg.both_orders, batch_size=cfg.batch_size * 2, seed=cfg.seed)
    model = models.ensure_model(db, cfg.feedback_model)
    db["runs"].update(ctx.run_id, {"model_id": model["id"], "constitution_version_id": version["id"]})
    pairs = data.list_pairs(db, cfg.prefs, limit=cfg.limit)
    if not pairs:
        raise ValueError(f"preference set {cfg.prefs!r} has no pairs")
    done = {
        r["pair_id"] for r in db["agreement_pairs"].rows_where("run_id = ?", [ctx.run_id], select="pair_id")
    }
    todo = [p for p in pairs if p["id"] not in done]
    ctx.progress(len(done), len(pairs))
    backend = backends.load(cfg.feedback_model, db=db) if todo else None
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        items = [PairItem(p["id"], p["prompt"], p["chosen"], p["rejected"]) for p in chunk]
        labels = label_pairs(backend, items, principles, opts)  # type: ignore[arg-type]
        db["agreement_pairs"].insert_all(
            {**pair_row(p["id"], lab, cfg.tie_band, cfg.inconsistent), "run_id": ctx.run_id,
             "meta": store.dumps(lab.meta())}
            for p, lab in zip(chunk, labels, strict=True)
        )
        done |= {p["id"] for p in chunk}
        ctx.progress(len(done), len(pairs))
    wanted = {p["id"] for p in pairs}
    rows = [r for r in db["agreement_pairs"].rows_where("run_id = ?", [ctx.run_id]) if r["pair_id"] in wanted]
    result = summarize(rows, cfg.bins, cfg.tie_band)
    ctx.log(
        f"agreement {result['agreement']} on {result['n']} pairs ({result['ties']} ties), ECE {result['ece']}, "
        f"position consistency {result['consistency']['rate']}, kappa {result['kappa']}"
    )
    return {
        **result,
        "prefs": cfg.prefs,
        "feedback_model": cfg.feedback_model,
        "constitution_version": version["version"],
        "inconsistent": cfg.inconsistent,
    }
