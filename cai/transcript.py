"""HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") to and from chat messages.

The workbench stores every prompt as an HH transcript that ends with "\\n\\nAssistant:", the
form hh-rlhf and the CAI paper use, so one text serves base models (as is) and chat models
(through `parse_hh` and the tokenizer's chat template).
"""

from __future__ import annotations

import re

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh(text: str) -> list[dict[str, str]]:
    """Messages of an HH transcript; a trailing "Assistant:" gives an empty assistant message."""
    marks = list(_TURN.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        raise ValueError("not an HH transcript: expected it to start with '\\n\\nHuman:'")
    messages = []
    for mark, nxt in zip(marks, [*marks[1:], None], strict=True):
        end = nxt.start() if nxt else len(text)
        content = text[mark.end() : end]
        messages.append({"role": _ROLES[mark.group(1)], "content": content.strip()})
    return messages


def last_human_turn(text: str) -> str:
    """The last human message of a transcript or its tail (what a reader needs to recognise the prompt)."""
    cut = text.rfind("Human:")
    if cut >= 0:
        text = text[cut + len("Human:") :]
    end = text.rfind(ASSISTANT)
    return (text[:end] if end >= 0 else text).strip()


def to_hh(messages: list[dict[str, str]], *, open_assistant: bool = True) -> str:
    """Messages as an HH transcript; ends with "\\n\\nAssistant:" when the last turn is the human's."""
    parts = []
    for m in messages:
        tag = HUMAN if m["role"] == "user" else ASSISTANT
        parts.append(f"{tag} {m['content']}" if m["content"] else tag)
    text = "".join(parts)
    if open_assistant and messages and messages[-1]["role"] == "user":
        text += ASSISTANT
    return text


def as_prompt(text: str) -> str:
    """A prompt in canonical form: an HH transcript ending in "\\n\\nAssistant:".

    Plain text becomes a one-turn human message; a transcript is cut after its last Human turn.
    """
    if not _TURN.search(text):
        return f"{HUMAN} {text.strip()}{ASSISTANT}"
    messages = parse_hh(text if text.startswith("\n\n") else "\n\n" + text.lstrip())
    humans = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not humans:
        raise ValueError("not an HH transcript: it has no Human turn")
    last_human = humans[-1]
    return to_hh(messages[: last_human + 1])


def split_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two transcripts that share a conversation into (prompt, chosen, rejected).

    The prompt is everything up to and including the last "\\n\\nAssistant:" the two share;
    responses keep their leading space, so prompt + response is the original transcript.
    """
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    # The shared prefix may run into the responses (both start with " I"): the prompt ends at the
    # last Assistant tag lying wholly inside the shared part.
    cut = chosen.rfind(ASSISTANT, 0, common)
    if cut < 0:
        raise ValueError("the two transcripts share no conversation ending in '\\n\\nAssistant:'")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]
