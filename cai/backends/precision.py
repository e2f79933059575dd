"""Which precision a model runs in: a pure rule over the hardware's capability, and how to read it here.

bf16 only pays where the hardware computes in it natively; elsewhere it is emulated and several times
slower than fp32. Both backends (transformers, vLLM on CPU) follow the same rule; no torch import here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic
DTYPES = ("float32", "bfloat16", "float16")


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
) -> DtypeChoice:
    """bf16 where the hardware computes in it natively (a GPU; a CPU with AVX512_BF16 or AMX), else fp32.

    On a CPU without native bf16 every bf16 matmul is emulated through fp32 conversions: measured 4-5x
    slower than fp32 for the default model on an AVX2 EPYC. A CPU keeps an fp32 `checkpoint` in fp32
    (bf16 would only drop precision it has). `override` ($CAI_DTYPE) wins.
    """
    if override:
        if override not in DTYPES:
            raise ValueError(f"CAI_DTYPE must be one of {', '.join(DTYPES)}, got {override!r}")
        return DtypeChoice(override, "CAI_DTYPE")
    if device.startswith("cuda"):
        return DtypeChoice("bfloat16", "GPU")
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


def pick_dtype(device: str, path: str | Path | None = None) -> DtypeChoice:
    """`choose_dtype` for this machine, $CAI_DTYPE and the checkpoint at `path`."""
    return choose_dtype(
        device,
        cpu_flags(),
        os.environ.get("CAI_DTYPE") or None,
        checkpoint_dtype(path) if path is not None else None,
    )


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
