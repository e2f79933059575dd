"""How long a model takes to become usable on this machine: its phase (converting on first use, or loading)
and an ETA, so a page can say what it is waiting for instead of a bare "loading".

Seconds measured by the process's backend pool are kept per model and phase in a small JSON file beside the
converted models (`<cache>/load-times.json`: machine-specific, like the cache itself); the newest
measurement is the estimate. Before any measurement the estimate is a stated prior: the default model's
conversion took 4.7 min on a busy 2-core machine (issue 28), and a load reads the weights at ~200 MB/s.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cai.backends.builtin import ALIASES, BUILD_VERSIONS, BUILTINS, FOLDERS, _is_current, cache_root

# First use of a builtin, before it was ever measured here (gemma3-270m: 4.7 min on a busy 2-core machine;
# smollm2: 190 s under load).
CONVERT_PRIOR_S = {"gemma3-270m": 280.0, "smollm2": 190.0, "tiny": 2.0}
READ_BYTES_PER_S = 200e6
LOAD_BASE_S = 2.0


def _builtin(row: dict[str, Any]) -> str | None:
    """The builtin a row's path names (an alias such as "default" resolved), or None."""
    path = str(row.get("path") or "")
    return ALIASES.get(path, path) if path in BUILTINS else None


def _store() -> Path:
    return cache_root() / "load-times.json"


def _key(row: dict[str, Any]) -> str:
    return f"{row.get('backend') or 'hf'}:{row.get('path') or row.get('name')}"


def phase(row: dict[str, Any]) -> str:
    """"convert" when a builtin is used for the first time on this machine (its cache is not built), "serve"
    for a served model (nothing to load here), else "load"."""
    if row.get("backend") == "served":
        return "serve"
    name = _builtin(row)
    if name and not _is_current(cache_root() / "models" / FOLDERS[name], BUILD_VERSIONS[name]):
        return "convert"
    return "load"


def measured(row: dict[str, Any], which: str) -> float | None:
    try:
        value = json.loads(_store().read_text()).get(_key(row), {}).get(which)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float) else None


def record(row: dict[str, Any], which: str, seconds: float) -> None:
    """Keep the seconds a phase took (atomic replace; a failure to write is not the caller's problem)."""
    path = _store()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            times = json.loads(path.read_text())
        except (OSError, ValueError):
            times = {}
        times.setdefault(_key(row), {})[which] = round(seconds, 1)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".load-times-")
        with os.fdopen(fd, "w") as out:
            json.dump(times, out, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def estimate(row: dict[str, Any], which: str | None = None) -> tuple[float, bool]:
    """(seconds, measured here?) for the row's phase: the last measurement, else the prior."""
    which = which or phase(row)
    got = measured(row, which)
    if got is not None:
        return got, True
    if which == "convert":
        return CONVERT_PRIOR_S.get(_builtin(row) or "", 60.0), False
    if which == "serve":
        return 0.0, False
    folder = Path(str(row.get("path") or "")).expanduser()
    if _builtin(row):
        folder = cache_root() / "models" / FOLDERS[_builtin(row)]
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    return LOAD_BASE_S + size / READ_BYTES_PER_S, False


def notice(row: dict[str, Any]) -> str:
    """What a page shows while a model that is not loaded yet gets ready, with its ETA."""
    which = phase(row)
    seconds, here = estimate(row, which)
    about = f"about {seconds:.0f} s" + (" as measured on this machine" if here else ", an estimate")
    if which == "convert":
        return f"Loading the model (first use converts it, {about}); later loads are quick."
    if which == "serve":
        return "Connecting to the model's server."
    return f"Loading the model ({about})."
