"""The exact texts sent to models for critiques, revisions and comparisons, as pure functions.

Templates are module constants in the paper's own shapes (checked byte for byte against the paper's
HHH eval prompts and few-shot files); principles are stored in this "wire form" (e.g. "\\n\\nCritiqueRequest:
...\\n\\nCritique:", "\\nPlease choose ... Options:") so rendering is concatenation and imports stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cai.transcript import ASSISTANT, HUMAN

# Critique / revision (SL stage). A principle's `critique` and `revision` are stored wrapped like this.
CRITIQUE_REQUEST = "\n\nCritiqueRequest: {request}\n\nCritique:"
REVISION_REQUEST = "\n\nRevisionRequest: {request}\n\nRevision:"
# A small base model that has finished a critique tends to start another "Critique:" block: cut there too.
CRITIQUE_STOP = ("\n\nRevisionRequest:", "\n\nCritiqueRequest:", "\n\nCritique:", HUMAN)
REVISION_STOP = ("\n\nCritiqueRequest:", "\n\nRevisionRequest:", "\n\nRevision:", HUMAN)

# Comparison (RL stage): the shape of the paper's HHH eval prompts (cai-paper/evals/HHH-dev-sample.jsonl).
COMPARISON_TEMPLATE = (
    "\n\nConsider the following conversation between a human and an assistant:\n\n"
    "{conversation}\n\n{principle}\n (A) [[[{response_a}]]]\n (B) [[[{response_b}]]]\n\nThe answer is:"
)
OPTIONS = (" (A)", " (B)")

# Chain-of-thought comparison: the shape of the paper's RLMadisonPrecogFewShotPrompts.json, whose
# exemplars hold "{}" where the principle goes. The model continues after COT_TRIGGER; then
# COT_ANSWER is appended and the option log-probs are read.
COMPARISON_COT_TEMPLATE = (
    "\n\nHuman: Consider the following conversation between a human (H) and an assistant (A):\n\n"
    "{conversation}\n\n{principle}\n (A) [[[{response_a}]]]\n (B) [[[{response_b}]]]"
    "\n\nAssistant: Let's think step by step:"
)
COT_STOP = (HUMAN,)
COT_ANSWER = HUMAN + "\nSo the answer is:"
COT_PLACEHOLDER = "{}"

CRITIQUE_PLACEHOLDER = "<the model's critique goes here>"


# ----------------------------------------------------------------------------- wire form of principles


def wrap_critique(text: str) -> str:
    """A critique request in wire form; text already in wire form is returned unchanged."""
    return text if text.startswith("\n\nCritiqueRequest:") else CRITIQUE_REQUEST.format(request=text.strip())


def wrap_revision(text: str) -> str:
    """A revision request in wire form; text already in wire form is returned unchanged."""
    return text if text.startswith("\n\nRevisionRequest:") else REVISION_REQUEST.format(request=text.strip())


def wrap_comparison(text: str) -> str:
    """A comparison instruction in wire form ("\\n... Options:"); wire form is returned unchanged."""
    if text.startswith("\n"):
        return text
    body = text.strip()
    return "\n" + (body if body.endswith("Options:") else body + " Options:")


def plain(text: str) -> str:
    """The human-readable sentence inside a wire-form principle text (for display and editing)."""
    body = text.strip()
    for head in ("CritiqueRequest:", "RevisionRequest:"):
        if body.startswith(head):
            body = body[len(head) :]
    for tail in ("\n\nCritique:", "\n\nRevision:", "Critique:", "Revision:", "Options:"):
        if body.endswith(tail):
            body = body[: -len(tail)]
            break
    return body.strip()


# ----------------------------------------------------------------------------- helpers


def _data(exemplar: Any) -> Any:
    """Exemplars may be given raw (as in the paper files) or as resolve_version() exemplar rows."""
    if isinstance(exemplar, Mapping) and "data" in exemplar and "kind" in exemplar:
        return exemplar["data"]
    return exemplar


def _field(principle: Mapping[str, Any] | str, key: str) -> str:
    return principle if isinstance(principle, str) else str(principle[key])


def conversation_text(prompt: str) -> str:
    """An HH prompt as the paper writes it inside a comparison: no leading newlines, no open Assistant tag."""
    text = prompt.lstrip("\n")
    return text[: -len(ASSISTANT)] if text.endswith(ASSISTANT) else text.rstrip()


def conversation_ha(prompt: str) -> str:
    """An HH prompt with the H:/A: speaker tags the paper's chain-of-thought exemplars use."""
    text = prompt[: -len(ASSISTANT)] if prompt.endswith(ASSISTANT) else prompt.rstrip()
    return text.replace("\n\nHuman:", "\n\nH:").replace("\n\nAssistant:", "\n\nA:").lstrip("\n")


def split_transcript(transcript: str) -> tuple[str, str]:
    """A full transcript as (prompt ending in "\\n\\nAssistant:", last assistant response)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("not an HH transcript with an assistant turn: no '\\n\\nAssistant:' found")
    end = cut + len(ASSISTANT)
    return transcript[:end], transcript[end:].strip()


# ----------------------------------------------------------------------------- critique / revision


def critique_exemplar_block(exemplars: Iterable[Any] = (), *, direct: bool = False) -> str:
    """The few-shot prefix: each exemplar transcript, without a trailing open "\\n\\nHuman:".

    With `direct=True` (the paper's direct-revision ablation) each exemplar loses its critique.
    """
    parts = []
    for e in exemplars:
        text = str(_data(e))
        if text.endswith(HUMAN):
            text = text[: -len(HUMAN)]
        if direct:
            start, stop = text.find("\n\nCritiqueRequest:"), text.find("\n\nRevisionRequest:")
            if 0 <= start < stop:
                text = text[:start] + text[stop:]
        parts.append(text)
    return "".join(parts)


def critique_prompt(
    transcript: str, response: str, principle: Mapping[str, Any] | str, exemplars: Sequence[Any] = ()
) -> str:
    """Few-shot block + conversation + the response + the principle's critique request.

    `transcript` ends in "\\n\\nAssistant:"; `principle` is a principle dict or a critique request text.
    """
    return (
        critique_exemplar_block(exemplars)
        + transcript
        + " "
        + response.strip()
        + wrap_critique(_field(principle, "critique"))
    )


def revision_prompt(
    transcript: str,
    response: str,
    principle: Mapping[str, Any],
    critique: str | None,
    exemplars: Sequence[Any] = (),
) -> str:
    """The critique prompt + the model's critique + the paired revision request.

    `critique=None` gives the direct-revision ablation: no critique request, exemplars without critiques.
    """
    revision = wrap_revision(str(principle["revision"]))
    if critique is None:
        head = critique_exemplar_block(exemplars, direct=True) + transcript + " " + response.strip()
        return head + revision
    return critique_prompt(transcript, response, principle, exemplars) + " " + critique.strip() + revision


# ----------------------------------------------------------------------------- comparisons


def comparison_prompt(
    conversation: str,
    principle_text: Mapping[str, Any] | str,
    response_a: str,
    response_b: str,
    exemplars: Sequence[Any] = (),
) -> str:
    """A multiple-choice comparison, read out with the log-probs of OPTIONS.

    `conversation` is an HH prompt (ending in "\\n\\nAssistant:" or not). Exemplars are
    {prompt, corrects, incorrects} dicts (RLMadisonFewShotPrompts.json), rendered with the same principle,
    the correct answer in (A) for even positions and (B) for odd ones, so the few-shot block has no
    position bias of its own.
    """
    principle = wrap_comparison(_field(principle_text, "text"))
    shots = []
    for i, e in enumerate(exemplars):
        d = _data(e)
        good, bad = d["corrects"][0], d["incorrects"][0]
        a, b = (good, bad) if i % 2 == 0 else (bad, good)
        shots.append(_comparison(d["prompt"], principle, a, b) + OPTIONS[i % 2])
    return "".join(shots) + _comparison(conversation, principle, response_a, response_b)


def _comparison(conversation: str, principle: str, response_a: str, response_b: str) -> str:
    return COMPARISON_TEMPLATE.format(
        conversation=conversation_text(conversation),
        principle=principle,
        response_a=response_a.strip(),
        response_b=response_b.strip(),
    )


def comparison_cot_prompt(
    conversation: str,
    principle_text: Mapping[str, Any] | str,
    response_a: str,
    response_b: str,
    exemplars: Sequence[Any] = (),
) -> str:
    """A chain-of-thought comparison ending in "Let's think step by step:" (the model continues).

    Exemplars are {prompt} dicts as in RLMadisonPrecogFewShotPrompts.json; their "{}" gets the principle.
    """
    principle = wrap_comparison(_field(principle_text, "text"))
    shots = "".join(str(_data(e)["prompt"]).replace(COT_PLACEHOLDER, principle, 1) for e in exemplars)
    return shots + COMPARISON_COT_TEMPLATE.format(
        conversation=conversation_ha(conversation),
        principle=principle,
        response_a=response_a.strip(),
        response_b=response_b.strip(),
    )


def comparison_cot_answer_prompt(cot_prompt: str, reasoning: str) -> str:
    """The CoT prompt + the model's reasoning + "So the answer is:", read out with OPTIONS."""
    return cot_prompt + " " + reasoning.strip() + COT_ANSWER


# ----------------------------------------------------------------------------- previews for the UI


def preview_critique(
    principle: Mapping[str, Any], transcript: str, exemplars: Sequence[Any] = ()
) -> dict[str, str]:
    """The critique and revision prompts a principle produces for a full sample transcript."""
    prompt, response = split_transcript(transcript)
    return {
        "critique": critique_prompt(prompt, response, principle, exemplars),
        "revision": revision_prompt(prompt, response, principle, CRITIQUE_PLACEHOLDER, exemplars),
    }


def preview_comparison(
    principle: Mapping[str, Any] | str,
    conversation: str,
    response_a: str,
    response_b: str,
    exemplars: Sequence[Any] = (),
    *,
    cot: bool = False,
) -> str:
    """The comparison prompt (or its chain-of-thought form) a principle produces for two responses."""
    render = comparison_cot_prompt if cot else comparison_prompt
    return render(conversation, principle, response_a, response_b, exemplars)


def preview_principle(
    version: dict[str, Any], principle_name: str, transcript: str, response_a: str, response_b: str,
    few_shot: int, cot: bool,
) -> str:
    """The exact prompt(s) a principle of a constitution version produces: its critique and revision prompts
    (with the version's first `few_shot` critique exemplars), or its comparison prompt (CoT form with `cot`).
    Raises LookupError when the version has no principle of that name."""
    match = [p for p in version["principles"] if p["name"] == principle_name]
    if not match:
        raise LookupError(f"version {version['version']} has no principle named {principle_name!r}")
    p = match[0]
    if p["kind"] == "critique":
        shots = [e for e in version["exemplars"] if e["kind"] == "critique"][:few_shot]
        out = preview_critique(p, transcript, shots)
        return f"=== critique prompt ===\n{out['critique']}\n\n=== revision prompt ===\n{out['revision']}"
    kind = "comparison_cot" if cot else "comparison"
    shots = [e for e in version["exemplars"] if e["kind"] == kind][:few_shot]
    prompt, _ = split_transcript(transcript) if ASSISTANT in transcript else (transcript, "")
    return preview_comparison(p, prompt, response_a, response_b, shots, cot=cot)
