"""#27 item 4: the builtin models are converted once, up front (`cai init`, `python app.py`), with a progress
line per step on stderr; a second call converts nothing, a damaged cache is rebuilt, a failure is one line.

Every test converts into a temporary $CAI_CACHE, never the shared ~/.cache/cai-workbench.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.backends import builtin
from cai.cli import main

TINY_STEPS = [
    "[1/1] tiny:   0% training the byte-level BPE tokenizer",
    "[1/1] tiny:  30% initialising the random weights (seed 0)",
    "[1/1] tiny:  70% saving safetensors and tokenizer",
]


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CAI_CACHE", str(root))
    monkeypatch.delenv("CAI_PREPARE_MODELS", raising=False)
    return root


def _lines(text: str) -> list[str]:
    """Our progress lines and errors (transformers adds its own tqdm bars while saving: kept out)."""
    return [line for line in text.splitlines() if line.startswith(("[", "error:"))]


def test_cai_init_converts_tiny_once_with_progress_then_finds_it_ready(cache, db_path, capsys, monkeypatch):
    built: list[Path] = []
    real = builtin.build_tiny
    monkeypatch.setattr(builtin, "build_tiny", lambda out: built.append(out) or real(out))
    assert main(["init", "--db", str(db_path), "--models", "tiny", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["converted"] == {"tiny": "converted"}
    err = _lines(captured.err)
    folder = cache / "models" / "tiny"
    assert err[0] == f"[1/1] tiny: converting into {folder} (once; later starts find it ready)"
    assert err[1:4] == TINY_STEPS
    assert err[4].startswith("[1/1] tiny: 100% ready in ") and err[4].endswith(" s") and len(err) == 5
    assert len(built) == 1 and builtin.is_ready("tiny")
    marker = json.loads((folder / builtin.MARKER).read_text())
    assert marker["version"] == builtin.BUILD_VERSIONS["tiny"]
    assert marker["files"]["model.safetensors"] == (folder / "model.safetensors").stat().st_size

    assert main(["init", "--db", str(db_path), "--models", "tiny"]) == 0  # second call: nothing converted
    captured = capsys.readouterr()
    assert _lines(captured.err) == [f"[1/1] tiny: ready ({folder})"]
    assert captured.out.rstrip().endswith("models ready: tiny")
    assert len(built) == 1


def test_prepare_names_each_model_and_resolves_the_default_alias(cache, monkeypatch, capsys):
    def fake(tag: str):
        def build(out: Path) -> None:
            builtin._step(50, f"building {tag}")
            (out / "config.json").write_text("{}")
        return build

    monkeypatch.setattr(builtin, "build_smollm2", fake("smollm2"))
    monkeypatch.setattr(builtin, "build_default", fake("gemma"))
    assert builtin.prepare(["smollm2", "default", "gemma3-270m"]) == {"smollm2": "converted", "gemma3-270m": "converted"}
    err = _lines(capsys.readouterr().err)
    assert [line for line in err if "%" in line and "100%" not in line] == [
        "[1/2] smollm2:  50% building smollm2", "[2/2] gemma3-270m:  50% building gemma"]
    assert builtin.prepare() == {"smollm2": "ready", "gemma3-270m": "ready"}
    assert _lines(capsys.readouterr().err) == [
        f"[1/2] smollm2: ready ({cache / 'models' / 'smollm2'})",
        f"[2/2] gemma3-270m: ready ({cache / 'models' / 'default'})",
    ]


@pytest.mark.parametrize("damage", ["truncate", "delete", "grow-tokenizer"])
def test_a_damaged_cache_is_rebuilt(cache, capsys, damage):
    builtin.prepare(["tiny"])
    folder = cache / "models" / "tiny"
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "delete":
        weights.unlink()
    else:
        with open(folder / "tokenizer.json", "a") as f:
            f.write(" ")
    assert not builtin.is_ready("tiny")
    capsys.readouterr()
    assert builtin.prepare(["tiny"]) == {"tiny": "converted"}
    assert weights.read_bytes() == good  # same seed: the very same weights again
    assert builtin.is_ready("tiny")
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".tiny.lock", "tiny"]


def test_a_cache_from_before_the_file_sizes_is_ready_unless_truncated(cache):
    builtin.prepare(["tiny"])
    folder = cache / "models" / "tiny"
    (folder / builtin.MARKER).write_text(json.dumps({"version": builtin.BUILD_VERSIONS["tiny"]}))
    assert builtin.is_ready("tiny")  # the caches built so far stay usable: no multi-minute rebuild
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert not builtin.is_ready("tiny")


def test_a_failed_conversion_is_one_line_and_leaves_no_half_model(cache, db_path, capsys, monkeypatch):
    def broken(out: Path) -> None:
        builtin._step(0, "starting")
        (out / "half.safetensors").write_bytes(b"x")
        raise OSError("No space left on device\n(second line)")

    monkeypatch.setattr(builtin, "build_tiny", broken)
    assert main(["init", "--db", str(db_path), "--models", "tiny"]) == 1
    err = _lines(capsys.readouterr().err)
    assert err[-1] == "error: converting the builtin model 'tiny' failed: No space left on device"
    assert err[:-1] == [f"[1/1] tiny: converting into {cache / 'models' / 'tiny'} (once; later starts find it ready)",
                        "[1/1] tiny:   0% starting"]
    assert [p.name for p in (cache / "models").iterdir()] == [".tiny.lock"]
    assert main(["init", "--db", str(db_path), "--models", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: not a builtin model: 'nope'")


def test_init_skips_models_with_none_or_the_env_switch(cache, db_path, capsys, monkeypatch):
    assert main(["init", "--db", str(db_path), "--models", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["converted"] == {}
    monkeypatch.setenv("CAI_PREPARE_MODELS", "0")
    assert main(["init", "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["converted"] == {}
    assert not (cache / "models").exists()


def test_app_converts_before_it_serves(cache, tmp_path, capsys, monkeypatch):
    import app
    import ui.warmup

    order: list[str] = []

    def fake(tag: str):
        return lambda out: order.append(f"build {tag}") or (out / "config.json").write_text("{}")

    monkeypatch.setattr(builtin, "build_smollm2", fake("smollm2"))
    monkeypatch.setattr(builtin, "build_default", fake("gemma3-270m"))
    monkeypatch.setattr(builtin, "build_tiny", fake("tiny"))
    monkeypatch.setattr(ui.warmup, "serve", lambda *a, **k: order.append("serve"))
    monkeypatch.setenv("CAI_ADMIN_PASSWORD", "password1")
    assert app.main(["--db", str(tmp_path / "wb.db"), "--model", "tiny"]) == 0
    assert order == ["build smollm2", "build gemma3-270m", "build tiny", "serve"]
    order.clear()
    assert app.main(["--db", str(tmp_path / "wb.db"), "--model", "tiny"]) == 0
    assert order == ["serve"]
    assert "[3/3] tiny: ready" in capsys.readouterr().err
