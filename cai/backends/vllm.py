"""The vLLM backend: the engine runs in a child process this object owns (see vllm_server.py).

That makes it safe to create from any program, test or web-app worker (vLLM needs a `__main__`
guard otherwise); prompts go over a pipe as text, option scoring as token ids built by the same rule
as the transformers backend (tokens.py) and read back through vLLM's prompt_logprobs.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.backends import tokens
from cai.backends.base import Completion, SamplingParams, cut_at_stop, render_chat
from cai.backends.precision import DtypeChoice, pick_dtype

STARTUP_TIMEOUT_S = 900.0
CPU_KV_CACHE_GIB = 2


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_engine_args(path: str) -> dict[str, Any]:
    """Engine settings: dtype by `precision.pick_dtype`; on GPUs 85% of memory, on CPU a fixed KV cache
    and eager mode."""
    gpu = _device() == "cuda"
    args: dict[str, Any] = {"dtype": pick_dtype(_device(), path).dtype, "seed": 0, "disable_log_stats": True}
    if gpu:
        args["gpu_memory_utilization"] = 0.85
    else:
        # The CPU backend otherwise reserves 92% of RAM; torch.compile would add minutes to startup.
        args.update(kv_cache_memory_bytes=CPU_KV_CACHE_GIB << 30, enforce_eager=True, max_model_len=4096)
    return args


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Keep the engine core inside the server process: one child to own, nothing to re-spawn.
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # use every core (vLLM keeps one back otherwise)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


class VLLMBackend:
    """Backend protocol over a vLLM engine in a child process. Call `close()` (or let exit do it)."""

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        chat: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        **engine_args: Any,
    ) -> None:
        from transformers import AutoTokenizer

        self.path = str(path)
        self.name = name or self.path
        self.chat = chat
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._bos = tokens.bos_prefix(self.tokenizer)
        self.engine_args = {**default_engine_args(self.path), **engine_args}
        self.dtype_choice = (
            DtypeChoice(str(engine_args["dtype"]), "asked for by the caller")
            if "dtype" in engine_args
            else pick_dtype(_device(), self.path)
        )
        self._lock = threading.Lock()
        self._log = Path(tempfile.mkstemp(prefix="cai-vllm-", suffix=".log")[1])
        self._proc: subprocess.Popen[str] | None = None
        self._start(startup_timeout)
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"VLLMBackend({self.name!r}, path={self.path!r}, pid={self._proc.pid if self._proc else None})"

    # -- the child process ---------------------------------------------------------------------

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        with open(self._log, "w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cai.backends.vllm_server"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env=_child_env(),
            )
        self._send({"model": self.path, "engine": self.engine_args})
        reply = self._receive(timeout)
        if not reply.get("ok"):
            self.close()
            raise RuntimeError(
                f"vLLM failed to start for {self.path}: {reply.get('error')}{self._log_tail()}"
            )
        self.startup_s = time.monotonic() - t0

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc and self._proc.stdin, "the vLLM engine is closed"
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise RuntimeError(f"the vLLM engine process has died{self._log_tail()}") from exc

    def _receive(self, timeout: float | None = None) -> dict[str, Any]:
        assert self._proc and self._proc.stdout, "the vLLM engine is closed"
        if timeout is not None:
            ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
            if not ready:
                self.close()
                raise TimeoutError(f"vLLM did not answer within {timeout:.0f} s{self._log_tail()}")
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise RuntimeError(f"the vLLM engine process exited (status {code}){self._log_tail()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def _call(self, message: dict[str, Any]) -> Any:
        with self._lock:
            self._send(message)
            reply = self._receive()
        if not reply.get("ok"):
            raise RuntimeError(f"vLLM request {message['op']!r} failed: {reply.get('error')}")
        return reply["result"]

    def _log_tail(self, lines: int = 30) -> str:
        try:
            tail = self._log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self._log} ---\n" + "\n".join(tail)

    def close(self) -> None:
        """Stop the engine process (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                assert proc.stdin
                proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()
        if proc.returncode == 0:
            self._log.unlink(missing_ok=True)

    # -- the protocol ----------------------------------------------------------------------------

    def render(self, transcript: str) -> str:
        return render_chat(self.tokenizer, transcript) if self.chat else transcript

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        if not prompts:
            return []
        request = {
            "op": "generate",
            "prompts": list(prompts),
            "params": {
                "max_new_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k,
                "seed": params.seed,
                "stop": [s for s in params.stop if s],
            },
        }
        out = []
        for row in self._call(request):
            text, _ = cut_at_stop(row["text"], params.stop)
            out.append(Completion(text, row["prompt_tokens"], row["completion_tokens"], row["finish_reason"]))
        return out

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(prompts) != len(options):
            raise ValueError(f"got {len(prompts)} prompts but {len(options)} option lists")
        scores: list[list[float]] = [[0.0] * len(opts) for opts in options]
        where, rows, counts = [], [], []
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            p = tokens.encode(self.tokenizer, prompt, self._bos)
            for j, option in enumerate(opts):
                rule = tokens.option_tokens(self.tokenizer, self._bos, prompt, option, p)
                if rule.n_option:
                    where.append((i, j))
                    rows.append(rule.ids)
                    counts.append(rule.n_option)
        if rows:
            for (i, j), value in zip(
                where, self._call({"op": "score", "rows": rows, "n": counts}), strict=True
            ):
                scores[i][j] = float(value)
        return scores
