"""Which precision a model runs in: a pure rule over the hardware's capability, and how to read it here.

bf16 only pays where the hardware computes in it natively; elsewhere it is emulated and several times
slower than fp32. Both backends (transformers, vLLM on CPU) follow the same rule; no torch import here.
Scoring (HHH, AI labels: where a log-prob is the result) runs in float32 on CPU by default, since bf16
flips near-tie items with batch composition; where it runs in bf16 (GPU, or opted in), `near_ties` counts
the items whose answer lies within that dtype's rounding noise of 0.5.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic
DTYPES = ("float32", "bfloat16", "float16")
PURPOSES = ("generate", "score")
# Unit roundoff (half the distance between 1 and the next number) of each dtype.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}


@dataclass(frozen=True)
class DtypeChoice:
    """The precision a model loads in, and why (printed in run logs, `generate --verbose`, bench JSON)."""

    dtype: str  # "float32" | "bfloat16" | "float16"
    reason: str


def choose_dtype(
    device: str,
    cpu_flags: frozenset[str] | set[str],
    override: str | None = None,
    checkpoint: str | None = None,
    purpose: str = "generate",
    score_override: str | None = None,
) -> DtypeChoice:
    """bf16 where the hardware computes in it natively (a GPU; a CPU with AVX512_BF16 or AMX), else fp32.

    On a CPU without native bf16 every bf16 matmul is emulated through fp32 conversions: measured 4-5x
    slower than fp32 for the default model on an AVX2 EPYC. A CPU keeps an fp32 `checkpoint` in fp32
    (bf16 would only drop precision it has). A model loaded to score (`purpose` "score") on a CPU runs in
    fp32: on a native-bf16 CPU bf16 was 1.8x faster but changed HHH accuracy (0.45 -> 0.425 on 40 items),
    and near-tie items flipped with batch composition. `override` ($CAI_DTYPE) wins; `score_override`
    ($CAI_SCORE_DTYPE, e.g. bfloat16 to opt in to speed) wins for scoring.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    for name, value in (("CAI_DTYPE", override), ("CAI_SCORE_DTYPE", score_override)):
        if value and value not in DTYPES:
            raise ValueError(f"{name} must be one of {', '.join(DTYPES)}, got {value!r}")
    if purpose == "score" and score_override:
        return DtypeChoice(score_override, "CAI_SCORE_DTYPE")
    if override:
        return DtypeChoice(override, "CAI_DTYPE")
    if device.startswith("cuda"):
        return DtypeChoice("bfloat16", "GPU")
    if purpose == "score":
        return DtypeChoice("float32", "scoring on CPU: float32 by default (bf16 flips near-ties; CAI_SCORE_DTYPE opts in)")
    if checkpoint == "float32":
        return DtypeChoice("float32", "the checkpoint is fp32")
    native = sorted(set(NATIVE_BF16_FLAGS) & set(cpu_flags))
    if native:
        return DtypeChoice("bfloat16", f"CPU has native bf16 ({', '.join(native)})")
    return DtypeChoice("float32", "CPU without native bf16 (no avx512_bf16/amx_bf16)")


def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (Linux /proc/cpuinfo; empty elsewhere, which means fp32 on CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def checkpoint_dtype(path: str | Path) -> str | None:
    """The dtype a model folder's config.json records, if any."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cfg in (config, config.get("text_config") or {}):
        value = cfg.get("dtype") or cfg.get("torch_dtype")
        if isinstance(value, str):
            return value
    return None


def pick_dtype(device: str, path: str | Path | None = None, purpose: str = "generate") -> DtypeChoice:
    """`choose_dtype` for this machine, $CAI_DTYPE, $CAI_SCORE_DTYPE and the checkpoint at `path`."""
    return choose_dtype(
        device,
        cpu_flags(),
        os.environ.get("CAI_DTYPE") or None,
        checkpoint_dtype(path) if path is not None else None,
        purpose,
        os.environ.get("CAI_SCORE_DTYPE") or None,
    )


def within_noise(logprob_a: float, logprob_b: float, dtype: str) -> bool:
    """Whether a two-option reading is a tie within the dtype's rounding: |lp_a - lp_b| no larger than the
    unit roundoff times the size of the two log-probs (a sum of token log-probs carries about that much
    error), i.e. p within about that / 4 of 0.5."""
    return abs(logprob_a - logprob_b) <= UNIT_ROUNDOFF[dtype] * (abs(logprob_a) + abs(logprob_b))


def near_tie(readings: list[list[float]], dtype: str) -> bool:
    """Whether any of an item's readings ([lp_a, lp_b] each) falls within the dtype's noise of 0.5: its
    answer could flip with batch composition or machine."""
    return any(within_noise(r[0], r[1], dtype) for r in readings if len(r) == 2)


def scoring_dtype(backend: object) -> str | None:
    """The dtype a backend scores in (None where the backend does not say: scripted, a remote server)."""
    choice = getattr(backend, "dtype_choice", None)
    return choice.dtype if choice is not None else None


def choose_threads(cpus: int, load: float, running_runs: int, override: str | None = None) -> tuple[int, str]:
    """torch threads for one worker: the CPUs shared among the running runs; 1 on an oversubscribed machine.

    torch's threads synchronise at every op, so when other processes hold the cores each op waits for
    its slowest thread (measured: 2 threads 5x slower than 1 on a 2-core machine at load 24).
    """
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"CAI_THREADS must be a positive integer, got {override!r}")
        return int(override), "CAI_THREADS"
    if load > cpus:
        return 1, f"load {load:.1f} exceeds {cpus} CPUs"
    share = max(1, cpus // max(1, running_runs))
    return share, f"{cpus} CPUs shared by {max(1, running_runs)} running run(s)"
