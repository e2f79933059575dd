"""`cai models add|list` and `cai generate --model tiny` through the real entry point."""

from __future__ import annotations

import json

import pytest

from cai.cli import main, make_parser


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_add_then_list(capsys, db_path, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert run(capsys, "models", "add", "mine", str(folder), "--chat", "--db", str(db_path))[0] == 0
    code, out, _ = run(capsys, "models", "add", "tiny-v", "tiny", "--backend", "vllm", "--db", str(db_path))
    assert (code, out) == (0, "registered model 'tiny-v' (id 2)\n")
    code, out, _ = run(capsys, "models", "list", "--json", "--db", str(db_path))
    rows = [{k: r[k] for k in ("id", "name", "path", "backend", "chat")} for r in json.loads(out)]
    assert rows == [
        {"id": 1, "name": "mine", "path": str(folder.resolve()), "backend": "hf", "chat": True},
        {"id": 2, "name": "tiny-v", "path": "tiny", "backend": "vllm", "chat": False},
    ]
    code, out, _ = run(capsys, "models", "list", "--db", str(db_path))
    assert out.splitlines()[0].split() == ["id", "name", "path", "backend", "chat", "role", "parent_id", "created_at"]
    assert out.splitlines()[2].split()[:5] == ["2", "tiny-v", "tiny", "vllm", "False"]


def test_models_add_rejects_bad_input(capsys, db_path, tmp_path):
    code, _, err = run(capsys, "models", "add", "x", str(tmp_path / "nope"), "--db", str(db_path))
    assert (code, err) == (2, f"error: model folder not found: {tmp_path / 'nope'}\n")
    code, _, err = run(capsys, "models", "add", "x", str(tmp_path), "--db", str(db_path))
    assert (code, err) == (2, f"error: {tmp_path}: not a model folder (no config.json in it)\n")
    assert run(capsys, "models", "add", "x", "tiny", "--db", str(db_path))[0] == 0
    code, _, err = run(capsys, "models", "add", "x", "tiny", "--db", str(db_path))
    assert (code, err) == (2, "error: a model named 'x' already exists\n")


def test_generate_with_the_tiny_model(capsys, db_path):
    code, out, _ = run(
        capsys,
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "8",
        "--json",
        "--db",
        str(db_path),
    )
    data = json.loads(out)
    assert code == 0
    assert data["prompt"] == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert (data["text"], data["completion_tokens"], data["finish_reason"]) == (
        " IdentK removeit inum France Ident",
        8,
        "length",
    )
    code, out, _ = run(
        capsys,
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "8",
        "--db",
        str(db_path),
    )
    assert out == "IdentK removeit inum France Ident\n"


def test_generate_raw_sends_the_prompt_as_is(capsys, db_path):
    code, out, _ = run(
        capsys,
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "hello",
        "--raw",
        "--max-new-tokens",
        "2",
        "--json",
        "--db",
        str(db_path),
    )
    assert code == 0 and json.loads(out)["prompt"] == "hello"
    code, _, err = run(
        capsys, "generate", "--model", "tiny", "--prompt", "x", "--max-new-tokens", "0", "--db", str(db_path)
    )
    assert (code, err) == (2, "error: --max-new-tokens must be >= 1, got 0\n")


@pytest.mark.parametrize("argv", [["models"], ["models", "add"], ["models", "list"], ["generate"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--db" in out or argv == ["models"]
