"""`cai models add|list|health|serve` (the model registry) and `cai generate` (one prompt through a backend).

Both are thin over `cai.models` and `cai.backends`; `generate` wraps the prompt as an HH transcript
(unless --raw) and renders it for chat models, exactly as the pipeline stages do.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cai.backends.builtin import POLICY_DEFAULT
from cai.cli import add_common, emit, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `models` and `generate` to the `cai` parser."""
    models = sub.add_parser("models", help="Register and list models.", description="The model registry.")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    add = msub.add_parser("add", help="Register a model.", description="Register a model under a name.")
    add.add_argument("name", help="Name to register the model under.")
    add.add_argument(
        "path",
        nargs="?",
        help="A local model folder, a Hugging Face hub id, or a builtin ('smollm2', 'gemma3-270m', 'default', "
        "'tiny'); "
        "for a served model (--endpoint), its weights if they are local (optional).",
    )
    add.add_argument(
        "--backend", choices=["hf", "vllm"], default="hf", help="Backend that serves it (default hf)."
    )
    add.add_argument("--chat", action="store_true", help="Render prompts with the tokenizer's chat template.")
    add.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="An OpenAI-compatible server (vllm serve, SGLang, TGI), e.g. http://127.0.0.1:8000/v1; repeat "
        "for several (requests go to the least loaded). Adds to a served model already under NAME.",
    )
    add.add_argument("--served-name", default=None, help="The model's name on the server (default: its first).")
    add.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or hub id, for scoring and chat templates."
    )
    add_common(add)
    add.set_defaults(func=cmd_add)

    lst = msub.add_parser(
        "list", help="List registered models.",
        description="List registered models; `role` says which role (policy & chat, feedback & HHH) each "
        "embedded model is the default for, and what an alias stands for.")
    add_common(lst)
    lst.set_defaults(func=cmd_list)

    hl = msub.add_parser(
        "health", help="Check a served model's endpoints.", description="Whether each endpoint answers."
    )
    hl.add_argument("name", help="A served model's registered name.")
    add_common(hl)
    hl.set_defaults(func=cmd_health)

    sv = msub.add_parser(
        "serve", help="Serve a model with one shared vLLM engine (or stop: --off).",
        description="Mark a model served: the workbench then starts one vLLM server for it on first use, and every "
        "caller (run workers, the Models chat, the arena) uses it; where it cannot be served, callers load the "
        "weights in process and say why. --off unmarks it.",
    )
    sv.add_argument("name", help="A registered model name, or a builtin ('default', 'smollm2', 'tiny').")
    sv.add_argument("--off", action="store_true", help="Unmark it: callers load the weights in process again.")
    add_common(sv)
    sv.set_defaults(func=cmd_serve)

    gen = sub.add_parser(
        "generate", help="Generate a continuation of one prompt.", description="Generate with a model."
    )
    gen.add_argument(
        "--model", default=POLICY_DEFAULT,
        help=f"Registered name, builtin ('smollm2', 'gemma3-270m', 'default', 'tiny'), folder or hub id "
        f"(default {POLICY_DEFAULT}, the policy & chat default).",
    )
    gen.add_argument("--prompt", required=True, help="The human's message (or a whole HH transcript).")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="Most tokens to generate (default 128).")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default).")
    gen.add_argument("--seed", type=int, default=None, help="Sampling seed, for reproducible samples.")
    gen.add_argument("--backend", choices=["hf", "vllm", "served"], default=None, help="Override the model's backend.")
    gen.add_argument(
        "--raw", action="store_true", help="Send the prompt as is: no HH wrapping, no stop strings."
    )
    add_common(gen)
    gen.add_argument(
        "--verbose", action="store_true", help="Print the backend's dtype and why it was chosen (stderr)."
    )
    gen.set_defaults(func=cmd_generate)


def _validated_path(path: str) -> str:
    from cai.models import validated_path

    return validated_path(path)


def cmd_add(args: argparse.Namespace) -> int:
    from cai import models, store

    db = store.connect(args.db)
    if args.endpoint:
        model_id = models.register_served(
            db,
            args.name,
            args.endpoint,
            served_name=args.served_name,
            tokenizer=_validated_path(args.tokenizer) if args.tokenizer else None,
            weights=_validated_path(args.path) if args.path else None,
            chat=args.chat,
        )
    elif not args.path:
        raise ValueError("give the model's PATH, or --endpoint URL for a served model")
    elif args.served_name or args.tokenizer:
        raise ValueError("--served-name and --tokenizer are for served models: add --endpoint URL")
    else:
        model_id = models.register_model(
            db, args.name, _validated_path(args.path), backend=args.backend, chat=args.chat
        )
    emit(
        args, models.get_model_by_id(db, model_id), lambda r: f"registered model {r['name']!r} (id {r['id']})"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cai import models, store

    rows = models.list_models(store.connect(args.db))
    cols = ["id", "name", "path", "backend", "chat", "role", "parent_id", "created_at"]
    emit(args, rows, lambda rs: table(rs, cols))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from cai import models, store

    rows = models.endpoint_health(store.connect(args.db), args.name)
    emit(args, rows, lambda rs: table(rs, ["endpoint", "ok", "detail"]))
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from cai import engines, store

    db = store.connect(args.db)
    row = engines.set_serve(db, args.name, not args.off)
    data = {"name": row["name"], "serve": bool(row["serve"]), "engine": engines.describe(db, row["name"])}
    emit(args, data, lambda d: d["engine"])
    return 0


def _open_db(path: str | None) -> Any:
    """The workbench database if one is named or exists; generate needs none for builtins and paths."""
    from cai import store

    return store.connect(path) if path or store.db_path(None).exists() else None


def cmd_generate(args: argparse.Namespace) -> int:
    from cai import backends
    from cai.transcript import as_prompt

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    backend = backends.load(args.model, db=_open_db(args.db), backend=args.backend)
    if args.verbose and backends.dtype_line(backend):
        print(backends.dtype_line(backend), file=sys.stderr)
    prompt = args.prompt if args.raw else backend.render(as_prompt(args.prompt))
    params = backends.SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        stop=() if args.raw else (backends.HUMAN_STOP,),
    )
    done = backend.generate([prompt], params)[0]
    data = {
        "model": args.model,
        "prompt": prompt,
        "text": done.text,
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "finish_reason": done.finish_reason,
    }
    emit(args, data, lambda d: d["text"].strip())
    return 0
