"""The blind A/B arena: campaigns, battles and votes, rater quality, invite codes and exports.

The modules, bottom up: `campaigns` (what battles where, under which caps), `votes` (votes as a FastChat
battle frame and TRL pairs), `raters` (gold pairs, agreement, exclusions), `battles` (turns, votes and leak
flags: the only door to a model's identity), `invites` (single-use rater codes), `export` (the
arena-human-preference-140k shape) and `compare` (campaigns between a compare run's models, on its
prompts). This module is the interface: it re-exports the public names of `campaigns`, `votes` and
`battles`, so callers write `arena.start_battle(...)`.
"""

from cai.arena.battles import (
    MAX_MESSAGE_CHARS,
    STALE_TURN_S,
    TurnJob,
    abandon_turn,
    battle_view,
    begin_turn,
    cast_vote,
    end_battle,
    find_leaks,
    finish_turn,
    leak_terms_for,
    message_too_long,
    start_battle,
)
from cai.arena.campaigns import (
    CHOICES,
    DIMENSIONS,
    INSTRUCTIONS,
    MAKER_TERMS,
    SAMPLE_CAMPAIGN,
    ArenaError,
    bound_campaign,
    check_test_models,
    create_campaign,
    get_campaign,
    list_campaigns,
    rater_campaigns,
    seed_sample_campaign,
    set_campaign_status,
)
from cai.arena.votes import (
    campaign_progress,
    preference_pairs,
    votes_frame,
)

__all__ = [
    "ArenaError",
    "CHOICES",
    "DIMENSIONS",
    "INSTRUCTIONS",
    "MAKER_TERMS",
    "MAX_MESSAGE_CHARS",
    "SAMPLE_CAMPAIGN",
    "STALE_TURN_S",
    "TurnJob",
    "abandon_turn",
    "battle_view",
    "begin_turn",
    "bound_campaign",
    "campaign_progress",
    "cast_vote",
    "check_test_models",
    "create_campaign",
    "end_battle",
    "find_leaks",
    "finish_turn",
    "get_campaign",
    "leak_terms_for",
    "list_campaigns",
    "message_too_long",
    "preference_pairs",
    "rater_campaigns",
    "seed_sample_campaign",
    "set_campaign_status",
    "start_battle",
    "votes_frame",
]
