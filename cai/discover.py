"""Principle discovery (Inverse Constitutional AI, arXiv 2406.06560): principles that explain preferences.

For a seeded sample of a preference set's pairs the feedback model completes "Choose the response that"
after seeing the conversation, the preferred response and the other one; near-duplicate proposals are
merged (word Jaccard); the best-supported candidates are tested with the ordinary labeller (`label_pairs`,
both orders) on disjoint held-out pairs, their agreement with the human choice reported with a bootstrap
CI; the best become comparison principles of a draft constitution version whose note carries each one's
measured agreement. Small base models propose weak principles: they are kept and shown as they are.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROPOSE_TEMPLATE = (
    "{conversation}\n\n"
    "Two assistant responses to the conversation above:\n\n"
    "Response (A): {chosen}\n\n"
    "Response (B): {rejected}\n\n"
    "A careful reviewer preferred response (A). The rule the reviewer followed, in one sentence:\n\n"
    "Rule: Choose the response that"
)
RULE_PREFIX = "Choose the response that"
STOP = ("\n",)
_WORD = re.compile(r"[a-z0-9']+")


@dataclass
class Candidate:
    text: str  # "Choose the response that ..."
    support: list[int] = field(default_factory=list)  # pair ids whose proposal merged into it
    agreement: float | None = None
    lo: float | None = None
    hi: float | None = None
    n: int = 0


# ----------------------------------------------------------------------------- pure pieces


def propose_prompt(prompt: str, chosen: str, rejected: str) -> str:
    return PROPOSE_TEMPLATE.format(conversation=prompt.rstrip(), chosen=chosen.strip(), rejected=rejected.strip())


def rule_text(completion: str) -> str:
    """The proposed rule from a completion of "Rule: Choose the response that": first line, ending in '.'; '' if empty."""
    body = completion.strip().split("\n")[0].strip().rstrip(".").strip()
    return f"{RULE_PREFIX} {body}." if body else ""


def words(text: str) -> set[str]:
    prefix = set(_WORD.findall(RULE_PREFIX.lower()))
    return set(_WORD.findall(text.lower())) - prefix


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def merge(proposals: Sequence[tuple[int, str]], threshold: float = 0.6) -> list[Candidate]:
    """Proposals (pair id, rule) in order -> candidates: a rule whose word Jaccard with an earlier candidate
    is >= threshold joins that candidate's support; empty rules are dropped. Most supported first (stable)."""
    out: list[Candidate] = []
    for pair_id, text in proposals:
        if not text:
            continue
        match = next((c for c in out if jaccard(c.text, text) >= threshold), None)
        if match:
            match.support.append(pair_id)
        else:
            out.append(Candidate(text, [pair_id]))
    return sorted(out, key=lambda c: -len(c.support))


def split(pair_ids: Sequence[int], sample: int, test: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint seeded samples: pairs that propose, pairs that test."""
    ids = list(pair_ids)
    random.Random(f"discover:{seed}").shuffle(ids)
    if len(ids) < 2:
        raise ValueError(f"discovery needs at least 2 pairs, the set has {len(ids)}")
    sample = min(sample, len(ids) - 1)
    return ids[:sample], ids[sample : sample + test]


# ----------------------------------------------------------------------------- the run stage


def score_candidates(backend: Any, candidates: Sequence[Candidate], pairs: Sequence[dict[str, Any]],
                    batch_size: int, seed: int, n_boot: int = 1000) -> None:
    """Each candidate as the only comparison principle over the held-out pairs: agreement and its CI."""
    from cai.evals.consistency import credit
    from cai.evals.paired import paired_bootstrap
    from cai.feedback import LabelOptions, PairItem, label_pairs

    opts = LabelOptions(ensemble=1, both_orders=True, batch_size=batch_size * 2, seed=seed)
    items = [PairItem(p["id"], p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    for i, c in enumerate(candidates):
        principle = {"name": f"candidate-{i + 1}", "text": c.text, "kind": "comparison", "enabled": True}
        credits: list[float] = []
        for start in range(0, len(items), batch_size):
            labels = label_pairs(backend, items[start : start + batch_size], [principle], opts)
            credits += [credit(lab.p, 0.0) for lab in labels]
        d = paired_bootstrap([0.0] * len(credits), credits, n_boot=n_boot, seed=seed)
        c.agreement, c.lo, c.hi, c.n = d.delta, d.lo, d.hi, d.n


# ----------------------------------------------------------------------------- arena votes as preferences


def arena_prefs(db: Any, name: str, campaign: str | None = None, dimension: str | None = None,
                include_leaks: bool = False) -> dict[str, Any]:
    """An arena campaign's decisive votes as a human preference set (p = 1), usable at once by pm, agreement
    and discovery runs; ties are left out and counted. Returns the set's name, id and counts."""
    from cai import arena, data

    if not campaign and not dimension:
        raise ValueError("name a campaign or a dimension whose votes to use")
    votes = arena.votes_frame(db, campaign=campaign, dimension=dimension, exclude_leaks=not include_leaks)
    pairs = arena.preference_pairs(votes)
    if pairs.empty:
        raise ValueError(f"no decisive votes{' in campaign ' + repr(campaign) if campaign else ''}"
                         f"{' on ' + dimension if dimension else ''} ({len(votes)} votes, all ties or none)")
    dims = sorted(set(pairs["dimension"]))
    kind = {"helpfulness": "helpful", "harmlessness": "harmless"}.get(dims[0], dims[0]) if len(dims) == 1 else "mixed"
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "p": 1.0,
             "meta": {k: r[k] for k in ("dimension", "campaign", "model_chosen", "model_rejected", "comment")}}
            for r in pairs.to_dict(orient="records")]
    provenance = {"from": "arena", "campaign": campaign, "dimension": dimension, "votes": len(votes),
                  "ties_left_out": len(votes) - len(pairs), "leaks_included": include_leaks}
    set_id = data.create_pref_set(db, name, "human", kind, rows, provenance=provenance)
    return {"name": name, "id": set_id, "pairs": len(rows), "votes": len(votes), "ties_left_out": len(votes) - len(rows),
            "kind": kind}
