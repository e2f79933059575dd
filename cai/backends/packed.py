"""Packed tree scoring plan: the shared-prefix tree (prefix.py) laid out as rows of one forward pass each.

Every (prompt, option) sequence of a call is merged into the radix tree; a row holds whole subtrees,
flattened depth-first, with a tree attention mask (a token sees its own segment up to itself and every
segment above it) and position ids equal to the token's position in its sequence. So one forward pass
computes, for both orders and both options of a comparison, exactly the logits the sequences' own causal
passes would, running each shared token once and no padding at all.

Where the tree is cut into rows is a cost choice (`units`): keeping a node with its subtrees in one row
runs its tokens once but pays dense attention over the row (the mask is applied to a full
`row x row` product), cutting it repeats the node's tokens at the top of each child's row. A token costs
1, an attention pair `1 / attn_tokens` (what the model's linear layers cost per token over what one
query-key pair costs), a forward pass `pass_tokens`; `rows` packs small units together while the extra
attention costs less than a pass. Pure Python; hf.py runs the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cai.backends.prefix import Node


@dataclass
class Segment:
    """A run of tokens in a row: `ids` at positions `start..`, below segment `parent` (-1: a root)."""

    ids: list[int]
    start: int
    parent: int
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (local position, token, key)


@dataclass
class Row:
    """Segments laid out one after another: `offsets[s]` is where segment s begins in the row."""

    segments: list[Segment] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(s.ids) for s in self.segments)

    def add(self, unit: list[Segment]) -> None:
        base = len(self.segments)
        for s in unit:
            self.segments.append(Segment(s.ids, s.start, s.parent + base if s.parent >= 0 else -1, s.reads))

    def ids(self) -> list[int]:
        return [t for s in self.segments for t in s.ids]

    def positions(self) -> list[int]:
        return [s.start + k for s in self.segments for k in range(len(s.ids))]

    def offsets(self) -> list[int]:
        out, n = [], 0
        for s in self.segments:
            out.append(n)
            n += len(s.ids)
        return out

    def visible(self) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """Per segment (row start, row end, key ranges it sees besides its own causal part): its ancestors."""
        offs = self.offsets()
        out = []
        for k, s in enumerate(self.segments):
            above, p = [], s.parent
            while p >= 0:
                above.append((offs[p], offs[p] + len(self.segments[p].ids)))
                p = self.segments[p].parent
            out.append((offs[k], offs[k] + len(s.ids), above))
        return out

    def reads(self) -> list[tuple[int, int, int]]:
        """(row index whose logits predict the token, token, key) for every read of the row."""
        offs = self.offsets()
        return [(offs[k] + pos, token, key) for k, s in enumerate(self.segments) for pos, token, key in s.reads]


def cost(size: int, attn_tokens: float) -> float:
    """What a unit of `size` tokens costs in one row: its tokens and its dense attention pairs."""
    return size + size * size / attn_tokens


def units(roots: Sequence[Node], attn_tokens: float) -> list[list[Segment]]:
    """The tree cut into units (segment lists, parents before children) at the least `cost` sum."""
    out: list[list[Segment]] = []
    for root in roots:
        out += _best(root, [], attn_tokens)[1]
    return out


def _whole(node: Node, path: list[Segment]) -> list[Segment]:
    """`path` (segments above, copied without their reads) and the node's whole subtree, depth-first."""
    segs = [Segment(s.ids, s.start, s.parent) for s in path]
    stack = [(node, len(segs) - 1)]
    while stack:
        n, parent = stack.pop()
        segs.append(Segment(n.ids, n.start, parent, list(n.reads)))
        here = len(segs) - 1
        stack += [(c, here) for c in reversed(n.children)]
    return segs


def _best(node: Node, path: list[Segment], attn_tokens: float) -> tuple[float, list[list[Segment]]]:
    """Cheapest units for `node`'s subtree below `path`: whole, or the node atop each child's own units."""
    whole = _whole(node, path)
    keep = (cost(sum(len(s.ids) for s in whole), attn_tokens), [whole])
    if len(node.children) < 2:
        return keep
    below = [*path, Segment(node.ids, node.start, len(path) - 1)]
    total, cut = 0.0, []
    for c in node.children:
        c_cost, c_units = _best(c, below, attn_tokens)
        total, cut = total + c_cost, cut + c_units
    if total >= keep[0]:
        return keep
    # The node's own reads go with its first unit only (each read is taken once).
    mine = len(path)
    cut[0][mine] = Segment(node.ids, node.start, cut[0][mine].parent, list(node.reads))
    return total, cut


def rows(unit_list: Sequence[list[Segment]], attn_tokens: float, pass_tokens: float) -> list[Row]:
    """Units packed into rows, largest first: a unit joins the first row it fits in (no longer than the
    largest unit) where the attention pairs it adds cost less than the forward pass it saves."""
    order = sorted(unit_list, key=lambda u: -sum(len(s.ids) for s in u))
    cap = sum(len(s.ids) for s in order[0]) if order else 0
    out: list[Row] = []
    for unit in order:
        size = sum(len(s.ids) for s in unit)
        for row in out:
            if row.size + size <= cap and 2 * row.size * size / attn_tokens < pass_tokens:
                row.add(unit)
                break
        else:
            row = Row()
            row.add(unit)
            out.append(row)
    return out


def tokens_run(row_list: Sequence[Row]) -> int:
    """Token slots the rows compute (shared tokens once per unit, nothing padded)."""
    return sum(r.size for r in row_list)
