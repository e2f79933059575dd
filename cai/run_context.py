"""What a stage gets from its run, below the stages: `RunContext` (config, database, links, resume, backends,
progress, log, cancel) and the reads of a run's row (`get_run`, the liveness rule, the one shown status).

Stages and trainers import this module, never `cai.runs`: the worker, which creates, launches and executes
runs through the stage registry, sits above them (cai.runs imports the stages; nothing here does).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlite_utils import Database

from cai import store
from cai.config import StageConfig
from cai.procs import pid_alive

T = TypeVar("T")
ACTIVE = ("queued", "running")
# The worker writes its heartbeat every HEARTBEAT_S seconds; a running run whose heartbeat is older
# than HEARTBEAT_TIMEOUT_S is shown as interrupted. Both can be set in the environment (tests, slow disks).
HEARTBEAT_S = float(os.environ.get("CAI_HEARTBEAT_S", "5"))
HEARTBEAT_TIMEOUT_S = float(os.environ.get("CAI_HEARTBEAT_TIMEOUT_S", "30"))


class RunCancelled(Exception):
    """Raised inside a stage when its run's cancel flag is set."""


class RunError(ValueError):
    """A run cannot be created, resumed or cancelled as asked."""


# Scripted backends by model name, as inspect_ai selects its mock model: while a name is in SCRIPTED,
# `ctx.backend(name)` returns its backend instead of loading weights (tests: `scripted(name, backend)` or
# monkeypatch.setitem). The spec "scripted" is always a fresh ScriptedBackend (echoes " OK", p = 0.5), which
# a worker process can load too.
SCRIPTED: dict[str, Any] = {}


@contextmanager
def scripted(name: str, backend: Any) -> Iterator[str]:
    """Within the block, runs that load the model `name` get `backend` (no weights, no patched loaders)."""
    SCRIPTED[name] = backend
    try:
        yield name
    finally:
        SCRIPTED.pop(name, None)


@dataclass
class RunContext:
    """What a stage gets from its run: config, database, links, resume, backends, progress, log and cancel."""

    db: Database
    run_id: int
    config: StageConfig
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    _done_at_start: int | None = None
    steps_done: int = 0
    steps_total: int = 0
    phase: str = ""
    _steps_at_start: int = 0
    _hooked: list[Any] = field(default_factory=list)

    def log(self, line: str, level: str = "info") -> None:
        self.db.table("run_logs").insert(
            {"run_id": self.run_id, "ts": store.now(), "level": level, "line": line}
        )

    def check_cancel(self) -> None:
        row = self.db.execute("select cancel_requested from runs where id = ?", [self.run_id]).fetchone()
        if row and row[0]:
            raise RunCancelled(f"run {self.run_id} cancelled")

    # -- what the run reads and what it has done
    def link(self, *, model: str | None = None, constitution_version: Mapping[str, Any] | None = None,
             **ids: int | None) -> dict[str, Any] | None:
        """Record on the run's row what it works with: the model (registered on first use), the constitution
        version and any other id column (`ids`); returns the model's registry row."""
        from cai import models

        row, update = None, dict(ids)
        if model:
            row = models.ensure_model(self.db, model)
            update["model_id"] = row["id"]
        if constitution_version is not None:
            update["constitution_version_id"] = constitution_version["id"]
        if update:
            self.db.table("runs").update(self.run_id, update)
        return row

    def resume(self, items: Sequence[T], key: Callable[[T], Hashable], table: str,
               columns: str | tuple[str, ...] = "id") -> list[T]:
        """The items still to do: those whose key(item) is not among the `columns` of this run's rows in `table`
        (so a resumed run skips what it stored before it stopped)."""
        cols = (columns,) if isinstance(columns, str) else columns
        rows = self.db.execute(f"select {', '.join(cols)} from [{table}] where run_id = ?", [self.run_id]).fetchall()
        done = {r[0] if len(cols) == 1 else tuple(r) for r in rows}
        return [it for it in items if key(it) not in done]

    def backend(self, spec: str, purpose: str = "generate") -> Any:
        """The loaded backend for a model spec, with this run's cancel flag hooked into long generations.

        A name in SCRIPTED, or "scripted", gives a scripted backend (see `scripted`); anything else goes to
        cai.backends.load (`purpose` "score": in the scoring precision). The worker calls `release()` at the
        end, so a cached backend keeps no hook."""
        from cai import backends

        if spec in SCRIPTED:
            backend: Any = SCRIPTED[spec]
        elif spec == "scripted":
            backend = backends.ScriptedBackend()
        else:  # the model's shared engine when it has one (cai.engines), else loaded in this process
            from cai import engines

            backend, path = engines.load(self.db, spec, purpose)
            if path:
                self.log(path)
        if backends.dtype_line(backend):
            self.log(backends.dtype_line(backend))
        if hasattr(backend, "should_stop"):  # cancel inside a long generation
            backend.should_stop = functools.partial(cancel_requested, self.db, self.run_id)
            self._hooked.append(backend)
        return backend

    def release(self) -> None:
        """Take this run's cancel hook off the backends it loaded (they may be cached and outlive the run)."""
        for backend in self._hooked:
            backend.should_stop = None
        self._hooked.clear()

    # -- progress
    def begin(self, done: int, total: int) -> None:
        """Record where this execution starts (a resumed run starts with `done` items already stored)."""
        self._done_at_start = done
        self.started = time.monotonic()
        self._steps_at_start = self.steps_done
        self.db.table("runs").update(self.run_id, {"done": done, "total": total, "eta_s": None})
        self.check_cancel()

    def progress(self, done: int, total: int, tokens: int = 0) -> None:
        """Record progress (items done of total, tokens generated since the last call); checks cancel."""
        if self._done_at_start is None:
            self._done_at_start = done - 1 if done > 0 else 0
        self.tokens += tokens
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done_now = done - self._done_at_start
        rate = done_now / elapsed if done_now > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        self.db.table("runs").update(
            self.run_id,
            {"done": done, "total": total, "tokens_per_s": round(self.tokens / elapsed, 2), "eta_s": eta},
        )
        self.check_cancel()

    def set_steps(self, done: int, total: int, phase: str = "") -> None:
        """Start step-level progress: model calls (or readings) done of total, and what runs now."""
        self.steps_done, self.steps_total, self.phase = done, total, phase
        self._steps_at_start = done
        self.db.table("runs").update(self.run_id, {"steps_done": done, "steps_total": total, "phase": phase})

    def set_phase(self, phase: str) -> None:
        """Say which step runs now (before it starts, so a long step shows what it is)."""
        self.phase = phase
        self.db.table("runs").update(self.run_id, {"phase": phase})

    def step(self, n: int, tokens: int = 0) -> None:
        """`n` more steps done (after a backend batch): step progress, tokens/s, ETA from the steps; checks cancel."""
        self.steps_done += n
        record_steps(self, self.steps_done, self.steps_total, self.phase, tokens=tokens,
                     steps_at_start=self._steps_at_start)

    # -- the resumable loop
    def work(
        self,
        items: Sequence[T],
        *,
        model: str,
        todo: Sequence[T],
        build: Callable[[Any, list[T], int], int],
        batches: int | Callable[[Sequence[T]], Iterable[list[T]]],
        steps: Callable[[T], int] | None = None,
        purpose: str = "generate",
        steps_stored: int = 0,
    ) -> int:
        """The loop of every resumable stage: progress from what is stored, load the backend only when there is
        work, then `build(backend, batch, first)` stores each batch (first = its 1-based item number) and
        returns the tokens it generated; progress and cancel after each. `steps(item)`: model calls (or
        readings) an item takes, for step-level progress (`step`/`set_phase` inside build); `steps_stored`: steps of
        items in `todo` already stored (a stage that stores steps as they finish). Returns items done."""
        done, total = len(items) - len(todo), len(items)
        self.begin(done, total)
        if steps is not None:
            steps_total = sum(steps(it) for it in items)
            self.set_steps(steps_total - sum(steps(it) for it in todo) + steps_stored, steps_total,
                           "loading the model" if todo else "")
        if not todo:
            return done
        backend = self.backend(model, purpose)
        self.begin(done, total)  # again: rates and ETA count from here, not from before the model loaded
        groups = batches(todo) if callable(batches) else [list(todo[i : i + batches])
                                                          for i in range(0, len(todo), batches)]
        try:
            for group in groups:
                tokens = build(backend, group, done + 1)
                done += len(group)
                self.progress(done, total, tokens=tokens)
        finally:
            self.release()
        return done



def record_steps(ctx: RunContext, steps_done: int, steps_total: int, phase: str, tokens: int = 0,
                 steps_at_start: int = 0) -> None:
    """Step-level progress between item completions: which step runs now, tokens/s, and an ETA from the
    step rate (so it shows after the first step, not the first finished item); checks cancel."""
    ctx.tokens += tokens
    elapsed = max(time.monotonic() - ctx.started, 1e-6)
    ctx.db.table("runs").update(ctx.run_id, {
        "steps_done": steps_done, "steps_total": steps_total, "phase": phase,
        "tokens_per_s": round(ctx.tokens / elapsed, 2),
        "eta_s": step_eta(steps_done - steps_at_start, steps_total - steps_done, elapsed),
    })
    ctx.check_cancel()


def step_eta(done_here: int, left: int, elapsed: float) -> float | None:
    """Seconds left at the rate of the steps done in this execution (None before the first one)."""
    if done_here <= 0:
        return None
    return left * elapsed / done_here


def cancel_requested(db: Database, run_id: int) -> bool:
    """The cancel flag, for backends that poll it inside a long generation."""
    row = db.execute("select cancel_requested from runs where id = ?", [run_id]).fetchone()
    return bool(row and row[0])


def world() -> tuple[int, int]:
    """(rank, world size) of this worker: (0, 1) unless it runs under accelerate/torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def get_run(db: Database, run_id: int) -> dict[str, Any]:
    try:
        run = dict(db.table("runs").get(run_id))
    except Exception:
        raise RunError(f"no run with id {run_id}") from None
    from cai.run_pins import PINS

    run["config"] = store.loads(run["config"], {})
    run["pinned"] = run["config"].pop(PINS, {})
    run["result"] = store.loads(run["result"])
    run = liveness(run)
    run["shown"] = shown(run)
    return run


def liveness(run: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Show an active run whose worker is gone as `interrupted`, with when it was last seen.

    Gone means: a pid that no longer exists on this host, or a heartbeat older than HEARTBEAT_TIMEOUT_S
    (the only sign for a worker on another host, or one that hangs). A recent heartbeat keeps it running,
    so resume refuses a run whose worker is still alive.
    """
    run["last_seen"] = run.get("heartbeat_at")
    if run["status"] not in ACTIVE:
        return run
    same_host = run.get("host") in (None, socket.gethostname())
    beat = run.get("heartbeat_at")
    age = None
    if beat:
        age = ((now or datetime.now(UTC)) - datetime.fromisoformat(beat)).total_seconds()
    dead_pid = same_host and bool(run["pid"]) and not pid_alive(run["pid"])
    stale = run["status"] == "running" and age is not None and age > HEARTBEAT_TIMEOUT_S
    if dead_pid or stale:
        run["status"] = "interrupted"  # its worker died (killed, machine restarted): resume it
        why = f"worker {run['pid']} on {run.get('host') or 'this host'} is gone" if dead_pid else (
            f"no heartbeat for {age:.0f} s")
        run["error"] = run.get("error") or why + (f"; last seen {beat}" if beat else "")
    return run


def shown(run: dict[str, Any]) -> dict[str, Any]:
    """The one status and progress every view shows of a run (the runs list, the run page, `cai runs show`,
    `cai runs list`), from the row as `get_run` judged it: status ("cancelling…" while a cancel request waits
    for the worker), items done of total, and while the run is active its step progress and ETA.

    `text` is the progress in words, e.g. "2/4 done" or "2/4 done · step 12/20"."""
    active = run["status"] in ACTIVE
    status = "cancelling…" if run["status"] == "running" and run.get("cancel_requested") else run["status"]
    done, total = run.get("done") or 0, run.get("total") or 0
    steps, steps_total = (run.get("steps_done") or 0, run.get("steps_total") or 0) if active else (0, 0)
    text = f"{done}/{total} done" + (f" · step {steps}/{steps_total}" if steps_total else "")
    return {"status": status, "active": active, "done": done, "total": total, "steps_done": steps,
            "steps_total": steps_total, "phase": (run.get("phase") or "") if active else "",
            "eta_s": run.get("eta_s") if active else None, "text": text}
