"""Arena votes in LMArena's arena-human-preference-140k shape, beside the FastChat battles and TRL pairs.

One row per vote: `evaluation_session_id` names the battle and `evaluation_order` the turn (a multi-turn
battle is one session of ordered votes), `conversation_a`/`_b` are the messages each side's transcript
holds up to that vote, and `conv_metadata` carries the style counts that style control reads (tokens are
whitespace-split words; headers, list items and bold spans are counted as in cai.evals.ratings).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cai.evals.ratings.style import _BOLD, _HEADER, style_counts
from cai.transcript import parse_hh

WINNER_140K = {"model_a": "model_a", "model_b": "model_b", "tie": "tie", "tie (bothbad)": "both_bad"}


def markdown_counts(text: str) -> dict[str, dict[str, int]]:
    """140k's per-answer markdown dicts: headers by level, ordered/unordered list items, ** and __ bold."""
    levels = [len(m.group(0).strip()) for m in _HEADER.finditer(text)]
    lines = text.splitlines()
    ordered = sum(1 for ln in lines if ln.lstrip()[:1].isdigit() and ln.lstrip().split(" ", 1)[0][-1:] in ".)")
    unordered = sum(1 for ln in lines if ln.lstrip()[:2] in ("- ", "* ", "+ "))
    bold = _BOLD.findall(text)
    return {
        "header_count": {f"h{i}": levels.count(i) for i in range(1, 7)},
        "list_count": {"ordered": ordered, "unordered": unordered},
        "bold_count": {"**": sum(b.startswith("**") for b in bold), "__": sum(b.startswith("__") for b in bold)},
    }


def conv_metadata(conv_a: list[dict[str, str]], conv_b: list[dict[str, str]]) -> dict[str, Any]:
    """Token and markdown counts of both sides' assistant messages (and the shared user messages)."""
    def side(conv: list[dict[str, str]]) -> tuple[int, dict[str, dict[str, int]]]:
        text = "\n".join(m["content"] for m in conv if m["role"] == "assistant")
        return style_counts(text)["tokens"], markdown_counts(text)

    users_text = "\n".join(m["content"] for m in conv_a if m["role"] == "user")
    tok_a, md_a = side(conv_a)
    tok_b, md_b = side(conv_b)
    meta: dict[str, Any] = {"sum_user_tokens": style_counts(users_text)["tokens"], "sum_assistant_a_tokens": tok_a,
                            "sum_assistant_b_tokens": tok_b, "turns": sum(m["role"] == "user" for m in conv_a)}
    for key in ("header_count", "list_count", "bold_count"):
        meta[f"{key}_a"], meta[f"{key}_b"] = md_a[key], md_b[key]
    return meta


def rows_140k(votes: pd.DataFrame) -> list[dict[str, Any]]:
    """The votes (cai.arena.votes_frame) as arena-human-preference-140k records."""
    out = []
    for v in votes.to_dict(orient="records"):
        history = [m for m in parse_hh(v["prompt"]) if m["content"] or m["role"] == "user"]
        if history and history[-1]["role"] == "assistant":
            history = history[:-1]
        conv_a = [*history, {"role": "assistant", "content": str(v["response_a"] or "").strip()}]
        conv_b = [*history, {"role": "assistant", "content": str(v["response_b"] or "").strip()}]
        out.append({
            "id": f"vote-{v['vote_id']}",
            "model_a": v["model_a"],
            "model_b": v["model_b"],
            "winner": WINNER_140K[v["winner"]],
            "evaluation_session_id": f"{v['campaign']}/battle-{v['battle_id']}",
            "evaluation_order": int(v["turn"]),
            "conversation_a": conv_a,
            "conversation_b": conv_b,
            "conv_metadata": conv_metadata(conv_a, conv_b),
            "dimension": v["dimension"],
            "timestamp": v["created_at"],
        })
    return out
