"""Elo, Bradley-Terry, Rao-Kupper and bootstrap intervals as pure functions over a battles DataFrame.

The input is FastChat's battle format (`model_a`, `model_b`, `winner` in {model_a, model_b, tie,
tie (bothbad)}, optionally `dimension`), so the workbench's own votes and published arena data rate
alike. The pieces: `battles` (the format, files, Elo, BT), `ties` (Rao-Kupper), `style` (style control),
`rate` (ratings with intervals, ranks, Figure 2), `dropk` (how robust the top spot is) and `pairing`
(which pair an arena battle shows). This module is the package's interface and re-exports their public names.
"""

from cai.evals.ratings.battles import (
    PRIOR_REG,
    WINNERS,
    RatingParams,
    bradley_terry,
    elo,
    read_votes,
    validate_battles,
    win_rate_matrix,
)
from cai.evals.ratings.dropk import DropK, drop_k, drop_k_by_dimension
from cai.evals.ratings.pairing import PAIRINGS, pair_weights, pick_pair
from cai.evals.ratings.rate import (
    INTERVAL_MIN_VOTES,
    METHODS,
    PROVISIONAL_BELOW,
    Rating,
    bootstrap,
    figure2,
    point_ratings,
    ranks,
    rate,
    rate_by_dimension,
)
from cai.evals.ratings.style import (
    STYLE_FEATURES,
    StyleFit,
    style_controlled,
    style_controlled_fit,
    style_counts,
    style_matrix,
    with_style,
)
from cai.evals.ratings.ties import TieModel, rao_kupper, rao_kupper_fit

__all__ = [
    "INTERVAL_MIN_VOTES",
    "METHODS",
    "PAIRINGS",
    "PRIOR_REG",
    "PROVISIONAL_BELOW",
    "STYLE_FEATURES",
    "WINNERS",
    "DropK",
    "Rating",
    "RatingParams",
    "StyleFit",
    "TieModel",
    "bootstrap",
    "bradley_terry",
    "drop_k",
    "drop_k_by_dimension",
    "elo",
    "figure2",
    "pair_weights",
    "pick_pair",
    "point_ratings",
    "ranks",
    "rao_kupper",
    "rao_kupper_fit",
    "rate",
    "rate_by_dimension",
    "read_votes",
    "style_controlled",
    "style_controlled_fit",
    "style_counts",
    "style_matrix",
    "validate_battles",
    "win_rate_matrix",
    "with_style",
]
