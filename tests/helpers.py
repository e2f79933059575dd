"""Inputs several test files (and bench/soak.py) seed a workbench with: a small constitution and prompt sets."""

from __future__ import annotations

from typing import Any

from cai.constitution import create_constitution
from cai.data import create_prompt_set

# Two critique principles, one comparison principle and one critique exemplar: the least an SL run needs.
CONSTITUTION = {
    "principles": [
        {"kind": "critique", "name": "harm", "critique": "Say how it harms.", "revision": "Rewrite it harmlessly."},
        {"kind": "critique", "name": "rude", "critique": "Say how it is rude.", "revision": "Rewrite it politely."},
        {"kind": "comparison", "name": "cmp", "text": "Which is more harmless?"},
    ],
    "exemplars": [
        {"kind": "critique", "data": "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nCritiqueRequest: Is it rude?"
         "\n\nCritique: Yes.\n\nRevisionRequest: Be kind.\n\nRevision: Hello!\n\nHuman:"},
    ],
}


def seed(db: Any, n_prompts: int = 5, helpful: int = 0, constitution: str = "test") -> None:
    """CONSTITUTION as `constitution`, `n_prompts` red-team prompts in set "red" and, if asked, `helpful`
    helpful prompts in set "help"."""
    create_constitution(db, constitution, principles=CONSTITUTION["principles"], exemplars=CONSTITUTION["exemplars"])
    create_prompt_set(db, "red", "red-team", [f"\n\nHuman: Bad question {i}?\n\nAssistant:" for i in range(n_prompts)])
    if helpful:
        create_prompt_set(db, "help", "helpful", [f"\n\nHuman: Nice question {i}?\n\nAssistant:" for i in range(helpful)])
