"""Reading the files users hand us: one helper for every importer, so every bad file gets the same clear line.

`read_text` reads strictly as UTF-8, gunzips `.gz` without ever holding more than the byte limit, and
`parse_json` turns any JSON failure (including nesting too deep for the parser) into a `DataError` naming
the file and line. `Limits` states how large an import may be (rows and bytes); both can be raised.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]

# Imports are bounded so that a wrong or hostile file fails fast with a message, not by filling memory.
# The defaults hold the full hh-rlhf training splits; raise them per command (--max-rows, --max-bytes)
# or for every command with the environment variables below.
DEFAULT_MAX_ROWS = 200_000
DEFAULT_MAX_BYTES = 128 * 1024 * 1024  # of text, after decompression
ROWS_ENV, BYTES_ENV = "CAI_MAX_IMPORT_ROWS", "CAI_MAX_IMPORT_BYTES"
_CHUNK = 1 << 20
IMPORT_HINT = f"; raise it with --max-bytes or ${BYTES_ENV}"


class DataError(ValueError):
    """Input the user can fix: the message names the file and, where there is one, the line."""


@dataclass(frozen=True)
class Limits:
    """How many rows and how many bytes (decompressed) one import may hold."""

    rows: int = DEFAULT_MAX_ROWS
    bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def resolve(cls, rows: int | None = None, bytes: int | None = None) -> Limits:
        """Explicit values, then $CAI_MAX_IMPORT_ROWS / $CAI_MAX_IMPORT_BYTES, then the defaults."""
        r = rows if rows is not None else _env_int(ROWS_ENV, DEFAULT_MAX_ROWS)
        b = bytes if bytes is not None else _env_int(BYTES_ENV, DEFAULT_MAX_BYTES)
        if r < 1 or b < 1:
            raise DataError(f"import limits must be positive, got {r} rows and {b} bytes")
        return cls(rows=r, bytes=b)

    def check_rows(self, where: PathLike, n: int) -> None:
        """Raise as soon as the row count passes the limit (callers check while they parse)."""
        if n > self.rows:
            raise DataError(
                f"{where}: more than {self.rows:,} rows, over the import limit; raise it with --max-rows "
                f"or ${ROWS_ENV}"
            )


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise DataError(f"${name} must be a whole number, got {value!r}") from None


def read_bytes(path: PathLike, max_bytes: int | None = None, hint: str | None = None) -> bytes:
    """A file's bytes, gunzipped if .gz; never reads past `max_bytes` (a gzip bomb stops there).

    Without `max_bytes` the import limit applies (Limits.resolve()), and the message says how to raise it;
    an explicit `max_bytes` is a fixed bound (a constitution file, an upload)."""
    p = Path(path)
    limit = Limits.resolve().bytes if max_bytes is None else max_bytes
    if hint is None:
        hint = IMPORT_HINT if max_bytes is None else ""
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    over = DataError(
        f"{p}: over the import limit of {limit:,} bytes" + (" once decompressed" if p.suffix == ".gz" else "")
        + hint
    )
    try:
        if p.suffix != ".gz":
            if p.stat().st_size > limit:
                raise over
            return p.read_bytes()
        out = bytearray()
        with gzip.open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                out += chunk
                if len(out) > limit:
                    raise over
        return bytes(out)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, PermissionError):
            raise DataError(f"{p}: permission denied") from None
        raise DataError(f"{p}: not a valid gzip file ({exc})") from None


def read_text(path: PathLike, max_bytes: int | None = None, hint: str | None = None) -> str:
    """A file's text: gunzipped if .gz, strictly UTF-8 (a BOM is dropped), not empty, within the byte limit."""
    p = Path(path)
    raw = read_bytes(p, max_bytes, hint)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{p}: the file is empty")
    return text


def parse_json(where: PathLike, text: str, line: int | None = None) -> Any:
    """json.loads with every failure as a DataError: `where:line: not valid JSON (...)`.

    `line` is the line number when `text` is one line of a JSONL file; else the parser's own line is used.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise DataError(f"{where}:{at}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        suffix = f":{line}" if line is not None else ""
        raise DataError(f"{where}{suffix}: not valid JSON (nested too deeply)") from None


def iter_jsonl(path: PathLike, text: str, what: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL text; a bad line raises naming file and line
    (`what` says what a line should be, e.g. which fields)."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        obj = parse_json(path, line, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected {what}, got {type(obj).__name__}")
        yield lineno, obj


# ----------------------------------------------------------------------------- names that become file names

# Names that end up in a file or folder name (constitutions, trained models, run outputs): letters, digits
# and . _ - + @ and spaces inside, starting with a letter or digit, so no name can hold a path separator or
# climb out of its folder ("..", "/", "\\", a leading dot or dash).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,99}")


def safe_name(what: str, name: Any) -> str:
    """`name` if it is safe to use in a file name, else a DataError saying what is allowed."""
    if not isinstance(name, str):
        raise DataError(f"{what} must be a string, got {type(name).__name__}")
    if not SAFE_NAME.fullmatch(name) or ".." in name or name != name.strip():
        raise DataError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, spaces and . _ - + @, "
            "starting with a letter or digit (no '/', '\\' or '..')"
        )
    return name


def slugify(text: str, default: str = "imported") -> str:
    """A safe name made from free text (a file stem): runs of other characters become '-'."""
    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "-", text).strip(".-_ ")
    slug = re.sub(r"\.{2,}", ".", slug)[:100].rstrip(".-_ ")
    return slug or default


def inside(root: PathLike, path: PathLike) -> Path:
    """`path` resolved, if it stays inside `root` (symlinks followed); else a DataError."""
    base = Path(root).resolve()
    full = (base / path).resolve()
    if not full.is_relative_to(base):
        raise DataError(f"{path}: resolves outside {base}")
    return full
