"""Where a database keeps its files: each database its own run folders and model folders.

Two workbench databases in one folder must never share a run's checkpoints or a model's weights, so
the folders are keyed by the database file: `<stem>.runs/<run id>` and `<stem>.models/<name>` beside
`<stem>.db` (a rank's private snapshot `.<name>.rankN-PID` maps back to its database's name; a backup
beside the original gets its own). The database also records a uuid (table `workbench`), which stamps
what its runs write, so a folder another database left under the same name is refused, never reused
(cai.train.common). A database made before this layout keeps finding its earlier runs in the shared
`runs/<id>` (ids up to `legacy_runs_upto`); its models keep their registered paths.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from sqlite_utils import Database


def _db_file(db: Database) -> str:
    return db.execute("PRAGMA database_list").fetchone()[2] or ""


def home(db: Database) -> Path:
    """The folder of the database file (./data for a database in memory)."""
    filename = _db_file(db)
    return Path(filename).resolve().parent if filename else Path("data").resolve()


def stem(db: Database) -> str:
    """The database file's name without its suffix; a rank snapshot's is its database's."""
    name = Path(_db_file(db)).name
    m = re.fullmatch(r"\.(.+)\.rank\d+-\d+", name)
    return Path(m[1] if m else name).stem if name else "workbench"


def initial(db: Database) -> dict[str, str]:
    """The `workbench` rows a database gets once (in its migration): a fresh uuid, and the last run id
    that predates the layout (0 for a new database)."""
    legacy = db.execute("select max(id) from runs").fetchone()[0] if db["runs"].exists() else None
    return {"uuid": uuid.uuid4().hex, "legacy_runs_upto": str(legacy or 0)}


def identity(db: Database) -> dict[str, str]:
    """The database's uuid and `legacy_runs_upto` (see the module docstring)."""
    return {r["key"]: r["value"] for r in db["workbench"].rows}


def runs_root(db: Database) -> Path:
    return home(db) / f"{stem(db)}.runs"


def models_root(db: Database) -> Path:
    return home(db) / f"{stem(db)}.models"


def run_folder(db: Database, run_id: int) -> Path:
    """`<stem>.runs/<id>`; for a run made before the layout existed, its old `runs/<id>`."""
    if run_id <= int(identity(db)["legacy_runs_upto"]):
        return home(db) / "runs" / str(run_id)
    return runs_root(db) / str(run_id)


def size(path: Path) -> int:
    """Bytes of the files under `path` (0 when it is missing)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def usage(db: Database) -> dict[str, Any]:
    """The disk this database's runs and trained models use: run folders (and the checkpoints in them)
    and the folders of the models its runs registered."""
    run_ids = [r[0] for r in db.execute("select id from runs order by id").fetchall()]
    folders = [(i, run_folder(db, i)) for i in run_ids]
    folders = [(i, p) for i, p in folders if p.is_dir()]
    ckpt = {i: sum(size(c) for c in p.glob("checkpoint-*")) for i, p in folders}
    model_paths = {
        Path(r[0]) for r in db.execute("select path from models where run_id is not null").fetchall()
    }
    models = [p for p in model_paths if p.is_dir()]
    return {
        "runs_folder": str(runs_root(db)),
        "run_folders": len(folders),
        "run_bytes": sum(size(p) for _, p in folders),
        "checkpoint_bytes": sum(ckpt.values()),
        "runs_with_checkpoints": sorted(i for i, b in ckpt.items() if b),
        "models_folder": str(models_root(db)),
        "model_folders": len(models),
        "model_bytes": sum(size(p) for p in models),
    }
