"""The vLLM engine process: `python -m cai.backends.vllm_server`, driven by JSON lines on stdin/stdout.

vLLM must build its engine under a `__main__` guard (it spawns processes), so the backend runs it
here, in a process of its own that it starts and stops; vLLM's own logs go to stderr, never into the
protocol stream. Requests: {"op": "generate" | "score" | "close", ...}; replies: {"ok": ..., ...}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits, so no engine is ever orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _protocol_stream() -> IO[str]:
    """A private copy of stdout for replies; fd 1 itself then points at stderr for everything else."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def generate(llm: Any, req: dict[str, Any]) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    p = req["params"]
    base_seed = p.get("seed")
    params = [
        SamplingParams(
            max_tokens=p["max_new_tokens"],
            temperature=p["temperature"],
            top_p=p["top_p"],
            top_k=p["top_k"],
            # One seed per request: vLLM seeds each request alone, so equal seeds would mean equal samples.
            seed=None if base_seed is None else base_seed * 100_003 + i,
            stop=list(p["stop"]) or None,
            skip_special_tokens=True,
        )
        for i in range(len(req["prompts"]))
    ]
    outs = llm.generate(req["prompts"], params, use_tqdm=False)
    return [
        {
            "text": o.outputs[0].text,
            "prompt_tokens": len(o.prompt_token_ids),
            "completion_tokens": len(o.outputs[0].token_ids),
            "finish_reason": "length" if o.outputs[0].finish_reason == "length" else "stop",
        }
        for o in outs
    ]


def score(llm: Any, req: dict[str, Any]) -> list[float]:
    """Sum of the log-probs of the last n tokens of each token prompt (vLLM prompt_logprobs)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    prompts = [{"prompt_token_ids": ids} for ids in req["rows"]]
    outs = llm.generate(prompts, params, use_tqdm=False)
    result = []
    for o, ids, n in zip(outs, req["rows"], req["n"], strict=True):
        lps = o.prompt_logprobs
        result.append(sum(lps[t][ids[t]].logprob for t in range(len(ids) - n, len(ids))))
    return result


def serve(inp: IO[str], out: IO[str]) -> None:
    from vllm import LLM

    init = json.loads(inp.readline())
    try:
        llm = LLM(model=init["model"], **init["engine"])
    except Exception as exc:  # the parent shows this and the log tail
        out.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    out.write(json.dumps({"ok": True}) + "\n")
    for line in inp:
        req = json.loads(line)
        if req["op"] == "close":
            break
        try:
            handler = {"generate": generate, "score": score}[req["op"]]
            reply = {"ok": True, "result": handler(llm, req)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
    out.write(json.dumps({"ok": True, "closed": True}) + "\n")


if __name__ == "__main__":
    _die_with_parent()
    serve(sys.stdin, _protocol_stream())
