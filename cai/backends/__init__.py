"""Model backends: transformers, vLLM and served endpoints behind one protocol (see base.py).

A spec is a registered model name (its row gives path, backend and chat; a served row also its
endpoints, see served.py), a builtin ("smollm2", "gemma3-270m",
its alias "default", "tiny": converted once into the cache, see builtin.py), a local folder, or a Hugging Face hub id.
Loaded backends are cached per process, keyed by (folder, backend, chat), since loading costs seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cai.backends.base import HUMAN_STOP, Backend, Cancelled, Completion, SamplingParams, ScriptedBackend
from cai.backends.builtin import BUILTINS, CHAT, builtin_path, cache_root

__all__ = [
    "HUMAN_STOP",
    "Backend",
    "Cancelled",
    "Completion",
    "SamplingParams",
    "ScriptedBackend",
    "cache_root",
    "clear_cache",
    "from_row",
    "load",
    "model_path",
    "dtype_line",
    "resolve",
]

BACKENDS = ("hf", "vllm", "served")
_LOADED: dict[tuple[str, str, bool], Any] = {}


def resolve(spec: str, db: Any = None) -> tuple[str, str, bool]:
    """(weights spec, backend, chat) for a model spec; registered names win over builtins and paths."""
    if not spec or not spec.strip():
        raise ValueError(
            "a model spec is empty: give a registered name, 'default', 'tiny', a folder or a hub id"
        )
    if db is not None:
        from cai import models

        row = models.get_model(db, spec)
        if row is not None:
            return row["path"], row["backend"], bool(row["chat"])
    return spec, "hf", spec in CHAT


def model_path(spec: str, db: Any = None) -> str:
    """A local folder (config + weights + tokenizer) for `spec`, converting builtins on first use.

    A served model has one when it was registered with its weights (`cai serve` does that).
    """
    path, backend, _ = resolve(spec, db)
    if backend == "served":
        from cai import models

        weights = models.get_model(db, spec)["meta"].get("weights")  # type: ignore[index]
        if not weights:
            raise ValueError(
                f"model {spec!r} is served at {path} and has no local weights registered; "
                "train from a model folder instead"
            )
        return _local_folder(weights)
    return _local_folder(path)


def _local_folder(path: str) -> str:
    if path in BUILTINS:
        return str(builtin_path(path))
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local}: not a model folder (no config.json in it)")
        return str(local.resolve())
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"model folder not found: {path}")
    return _hub_snapshot(path)


def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # offline, unknown repo, gated: all the same to the user
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline else str(exc)
        raise LookupError(
            f"model {repo_id!r} is not a registered model, builtin ({', '.join(BUILTINS)}) or local folder, "
            f"and the Hugging Face Hub could not provide it: {why}"
        ) from exc


def load(
    spec: str, *, db: Any = None, backend: str | None = None, chat: bool | None = None, cache: bool = True,
    purpose: str = "generate", **options: Any,
) -> Backend:
    """A ready backend for `spec`. `backend` and `chat` override the registered ones; `options` go to its constructor.

    With cache=True (the default) a second call with the same folder, backend, chat flag and purpose returns
    the same object; pass cache=False for a private copy (e.g. one that training will modify). `purpose`
    "score" loads a transformers model in the scoring precision (float32 on CPU, see precision.choose_dtype).
    """
    path, registered_backend, registered_chat = resolve(spec, db)
    chat = registered_chat if chat is None else chat
    kind = backend or registered_backend
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {kind!r}")
    if registered_backend == "served":
        from cai import models

        row = models.get_model(db, spec)
        assert row is not None  # resolve() found it
        if kind == "served":
            return from_row({**row, "chat": chat}, cache=cache, **options)
        path = row["meta"].get("weights") or ""  # e.g. `cai generate --model srv --backend hf`
        if not path:
            raise ValueError(f"model {spec!r} is served and has no local weights for the {kind} backend")
    elif kind == "served":
        raise ValueError(f"{spec!r} is not a served model: register one with `cai models add NAME --endpoint URL`")
    from cai import loadclock

    with loadclock.timed() as clock:  # a builtin's first-use conversion counts as loading; a cache hit not
        folder = _local_folder(path)
        key = (folder, kind, chat) if purpose == "generate" else (folder, kind, chat, purpose)
        if cache and not options and key in _LOADED:
            clock.cancel()
            return _LOADED[key]  # type: ignore[no-any-return]
        if kind == "hf":
            from cai.backends.hf import HFBackend

            made: Any = HFBackend(folder, name=spec, chat=chat, purpose=purpose, **options)
        else:
            from cai.backends.vllm import VLLMBackend

            made = VLLMBackend(folder, name=spec, chat=chat, **options)
    if cache and not options:
        _LOADED[key] = made
    return made  # type: ignore[no-any-return]


def from_row(row: dict[str, Any], *, cache: bool = True, **options: Any) -> Backend:
    """A ready backend for a registry row, as registered: its backend kind and chat flag (the arena and the
    Models-tab chat load their models this way)."""
    if row["backend"] != "served":
        return load(row["path"], backend=row["backend"], chat=bool(row["chat"]), cache=cache, **options)
    from cai.backends.served import ServedBackend

    meta = row["meta"]
    endpoints = meta.get("endpoints") or [row["path"]]
    key = (" ".join(endpoints), "served", bool(row["chat"]))
    if cache and not options and key in _LOADED:
        return _LOADED[key]  # type: ignore[no-any-return]
    made = ServedBackend(
        endpoints,
        served_name=meta.get("served_name"),
        tokenizer=meta.get("tokenizer") or meta.get("weights") and _local_folder(meta["weights"]),
        name=row["name"],
        chat=bool(row["chat"]),
        **options,
    )
    dtype = (meta.get("engine") or {}).get("dtype")
    if dtype:  # the server's --dtype: the runs that score through it store it with their rows
        from cai.backends.precision import DtypeChoice

        made.dtype_choice = DtypeChoice(str(dtype), "the server's --dtype")
    if cache and not options:
        _LOADED[key] = made
    return made


def dtype_line(backend: Any) -> str:
    """The backend's dtype and why it was chosen, as one log line ("" for backends without one)."""
    choice = getattr(backend, "dtype_choice", None)
    return f"{backend.name}: dtype {choice.dtype} ({choice.reason})" if choice else ""


def clear_cache() -> None:
    """Forget loaded backends (closing vLLM engines), so their memory can be freed."""
    for backend in _LOADED.values():
        close = getattr(backend, "close", None)
        if close:
            close()
    _LOADED.clear()
