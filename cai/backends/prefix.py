"""Shared-prefix scoring plan: every (prompt, option) token sequence of a call, merged into a radix tree.

Both option orders of a comparison, and both options, share the conversation's tokens; the tree runs
each shared segment once and hands its KV cache to the segments below it. Nothing is padded: siblings
run together only when their segments are equally long. Pure Python here; hf.py runs the tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Node:
    """A run of tokens every sequence below it shares; `reads`: (local position, next token, key).

    The logits at `local position` predict `next token`, which is the key's option token.
    """

    ids: list[int]
    start: int  # global position of ids[0]
    children: list[Node] = field(default_factory=list)
    reads: list[tuple[int, int, int]] = field(default_factory=list)

    def size(self) -> int:
        return len(self.ids) + sum(c.size() for c in self.children)


def build(sequences: Sequence[tuple[int, list[int], int]], start: int = 0) -> list[Node]:
    """Radix tree of `(key, ids, n_option)` sequences: one root per distinct token at `start`."""
    groups: dict[int, list[tuple[int, list[int], int]]] = {}
    for seq in sequences:
        if len(seq[1]) > start:
            groups.setdefault(seq[1][start], []).append(seq)
    nodes = []
    for group in groups.values():
        end = min(len(ids) for _, ids, _ in group)
        first = group[0][1]
        shared = start + 1
        while shared < end and all(ids[shared] == first[shared] for _, ids, _ in group):
            shared += 1
        node = Node(first[start:shared], start)
        for key, ids, n_option in group:  # option token t is read at position t - 1
            for t in range(max(len(ids) - n_option, start + 1), min(len(ids), shared + 1)):
                node.reads.append((t - 1 - start, ids[t], key))
        node.children = build(group, shared)
        nodes.append(node)
    return nodes


def tokens_run(roots: Sequence[Node]) -> int:
    """Tokens the tree runs through the model (each shared segment once)."""
    return sum(n.size() for n in roots)


def padded_tokens(widths_and_rows: Sequence[tuple[int, int]]) -> int:
    """Token slots a padded batch plan computes: sum of width x rows over its forward passes."""
    return sum(w * r for w, r in widths_and_rows)
