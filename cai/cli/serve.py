"""`cai serve MODEL`: vLLM's OpenAI-compatible server for a registered model or folder, registered as served.

The server runs as a child of this command until Ctrl-C (or SIGTERM), which stops it. Engine
settings come from the flags, else from the model's registry row (meta["engine"]), else vLLM's
defaults for the hardware; the ones used are stored with the served registration.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from cai.cli import add_common, emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="Serve a model with vLLM's OpenAI-compatible server and register it.",
        description="Start vLLM's OpenAI-compatible server for a model, wait until it answers, register "
        "its endpoint (under --name) and keep it running until Ctrl-C.",
    )
    p.add_argument("model", help="Registered name, 'default', 'tiny', a folder or a hub id.")
    p.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for other machines).")
    p.add_argument("--name", default=None, help="Served model's registry name (default: MODEL-served).")
    p.add_argument("--tensor-parallel-size", type=int, default=None, help="GPUs per model copy (vLLM -tp).")
    p.add_argument("--data-parallel-size", type=int, default=None, help="Model copies in this server (-dp).")
    p.add_argument("--dtype", default=None, help="bfloat16 (default), float16, float32 or auto.")
    p.add_argument("--max-model-len", type=int, default=None, help="Longest prompt+completion, in tokens.")
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="Share of each GPU's memory (0.85 default).",
    )
    p.add_argument("--chat", action="store_true", help="Register it as a chat model (chat template).")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="Seconds to wait for /health.")
    add_common(p)
    p.set_defaults(func=cmd_serve)


def engine_settings(args: argparse.Namespace, registered: dict[str, Any]) -> dict[str, Any]:
    """The registry's engine settings for the model, overridden by any flag given."""
    engine = dict(registered)
    for key in (
        "tensor_parallel_size",
        "data_parallel_size",
        "dtype",
        "max_model_len",
        "gpu_memory_utilization",
    ):
        if getattr(args, key) is not None:
            engine[key] = getattr(args, key)
    for key in ("tensor_parallel_size", "data_parallel_size", "max_model_len"):
        if key in engine and int(engine[key]) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {engine[key]}")
    share = engine.get("gpu_memory_utilization")
    if share is not None and not 0 < float(share) <= 1:
        raise ValueError(f"--gpu-memory-utilization must be in (0, 1], got {share}")
    return engine


def cmd_serve(args: argparse.Namespace) -> int:
    from cai import backends, models, store
    from cai.backends.vllm import VLLMServer

    db = store.connect(args.db)
    row = models.get_model(db, args.model)
    folder = backends.model_path(args.model, db)
    engine = engine_settings(args, (row or {}).get("meta", {}).get("engine", {}))
    name = args.name or f"{args.model}-served"
    server = VLLMServer(folder, port=args.port, host=args.host, served_name=args.model, engine=engine)
    print(f"starting vLLM for {args.model} on {server.url} (log: {server.log}) ...", flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        seconds = server.wait_ready(args.startup_timeout)
        model_id = models.register_served(
            db,
            name,
            [server.url],
            served_name=args.model,
            tokenizer=folder,
            weights=args.model,
            engine=server.engine,
            chat=args.chat,
        )
        data = {
            "name": name,
            "id": model_id,
            "endpoint": server.url,
            "startup_s": round(seconds, 1),
            "engine": server.engine,
            "pid": server.proc.pid if server.proc else None,
        }
        emit(
            args,
            data,
            lambda d: (
                f"serving {args.model} as {d['name']!r} at {d['endpoint']} "
                f"(ready in {d['startup_s']} s); Ctrl-C stops it"
            ),
        )
        assert server.proc is not None
        server.proc.wait()
        print(
            f"error: the vLLM server exited (status {server.proc.returncode}){server.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
