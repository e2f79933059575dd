"""How a prompt and an option become token ids for scoring: one rule shared by every backend.

Both backends score exactly the same ids (the vLLM backend sends them as token prompts), so their
option log-probs differ only by numerics, never by tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptionTokens:
    """A prompt+option as token ids, and how many of the trailing ids are the option's."""

    ids: list[int]
    n_option: int


def bos_prefix(tokenizer) -> list[int]:  # type: ignore[no-untyped-def]
    """[bos] when the tokenizer adds a BOS token to a plain encode, else []."""
    probe = tokenizer("x").input_ids
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and probe and probe[0] == bos else []


def encode(tokenizer, text: str, bos: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """Token ids as the model sees a prompt: the BOS prefix + the text's tokens."""
    return bos + tokenizer(text, add_special_tokens=False).input_ids


def option_tokens(
    tokenizer, bos: list[int], prompt: str, option: str, prompt_ids: list[int] | None = None
) -> OptionTokens:  # type: ignore[no-untyped-def]
    """The tokenization rule for scoring `option` after `prompt`.

    Tokenize prompt+option together; when the prompt's own tokens are a prefix of that, the option's
    tokens are the rest (the natural tokenization of the whole text). When they are not (a merge
    across the boundary, e.g. prompt "Hum" + option "an" -> "Human"), keep the prompt's own tokens,
    which are what generation would continue from, and append the option tokenized alone.
    An empty option has no tokens and scores 0.
    """
    p = prompt_ids if prompt_ids is not None else encode(tokenizer, prompt, bos)
    if not option:
        return OptionTokens(p, 0)
    whole = encode(tokenizer, prompt + option, bos)
    if len(whole) > len(p) and whole[: len(p)] == p:
        return OptionTokens(whole, len(whole) - len(p))
    alone = tokenizer(option, add_special_tokens=False).input_ids
    return OptionTokens(p + alone, len(alone))
