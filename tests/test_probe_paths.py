"""Replay of the adversarial probe's path-traversal steps (issue 17, item 2), and the rules that stop them.

1. A constitution named `../../../../tmp/x/pwned` is imported, then a *viewer* exports it through the
   Constitution tab's handler: the import is refused, and a row with such a name already in an older
   database still exports inside the handler's temp folder.
2. `cai run sft --name ../../escaped-sft` is refused before any run exists; the trainer's output folder is
   checked again in the worker. The web app's model registration applies the CLI's path checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cai import constitution as C
from cai import files, models, users
from cai.cli import main
from cai.store import folders
from cai.train.common import output_dir
from ui import constitution as T
from ui import models as M
from ui.common import AppContext

ADMIN, VIEWER = SimpleNamespace(username="ada"), SimpleNamespace(username="val")
EVIL = "../../../../tmp/x/pwned"


@pytest.fixture
def ctx(db, db_path):
    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password1")
    return AppContext(db_path)


def _cai_file(tmp_path: Path, name: object, file: str = "evil.json") -> Path:
    path = tmp_path / file
    principles = [{"kind": "comparison", "name": "kinder", "text": "Which response is kinder?"}]
    path.write_text(json.dumps({"format": C.FORMAT, "name": name, "principles": principles, "exemplars": []}))
    return path


def test_import_refuses_a_traversing_constitution_name(ctx, db, tmp_path, db_path, capsys):
    path = _cai_file(tmp_path, EVIL)
    message = (f"constitution name {EVIL!r} is not allowed: use 1-100 letters, digits, spaces and . _ - + @, "
               "starting with a letter or digit (no '/', '\\' or '..')")
    with pytest.raises(files.DataError) as err:
        C.import_file(db, path)
    assert str(err.value) == message
    assert main(["constitution", "import", str(path), "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert main(["constitution", "import", str(_cai_file(tmp_path, "fine", "fine.json")), "--into", "a/b",
                 "--db", str(db_path)]) == 2
    assert "constitution name 'a/b' is not allowed" in capsys.readouterr().err
    status, name = T.import_upload(ctx, str(path), "", ADMIN)
    assert (status, name) == ("Import failed: " + message.replace("'", "&#x27;"), "")
    assert db["constitutions"].count == 0


def test_a_viewer_export_of_an_old_traversing_name_stays_in_its_temp_folder(ctx, db):
    # A database written before the name rule: put the row in directly, as the probe's import did.
    C.create_constitution(db, "ok", principles=[{"kind": "comparison", "name": "k", "text": "Which is kinder?"}])
    db.execute("update constitutions set name = ? where name = 'ok'", [EVIL])
    db.conn.commit()
    target = Path("/tmp/x")
    before = set(target.glob("pwned*")) if target.is_dir() else set()
    out = Path(T.export_file(ctx, EVIL, None, "cai", "", VIEWER))
    assert out.parent.name.startswith("cai-export-") and out.parent.parent == Path(T.tempfile.gettempdir())
    assert out.name == "tmp-x-pwned-v1.json"
    assert json.loads(out.read_text())["name"] == EVIL
    assert (set(target.glob("pwned*")) if target.is_dir() else set()) == before


def test_sft_name_that_escapes_the_models_folder_is_refused(db, db_path, capsys):
    assert main(["run", "sft", "--chains", "1", "--name", "../../escaped-sft", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == (
        "error: name '../../escaped-sft' is not allowed: use 1-100 letters, digits, spaces and . _ - + @, "
        "starting with a letter or digit (no '/', '\\' or '..')\n")
    assert db["runs"].count == 0
    for kind in ("pm", "rl", "dpo"):
        assert main(["run", kind, "--name", "../x", "--db", str(db_path)]) == 2
        assert "name '../x' is not allowed" in capsys.readouterr().err
    # The worker checks again, whatever wrote the run row.
    root = folders.models_root(db)
    assert output_dir(db, "sft-3") == root.resolve() / "sft-3"
    for bad in ("../../escaped-sft", "/tmp/abs", "a/../../b", ".hidden", "x\\y"):
        with pytest.raises(files.DataError, match="model name .* is not allowed"):
            output_dir(db, bad)


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert files.inside(root, "a.json") == root.resolve() / "a.json"
    with pytest.raises(files.DataError, match="resolves outside"):
        files.inside(root, "link/escaped.json")


def test_web_registration_applies_the_cli_path_checks(ctx, db, tmp_path):
    # Missing, outside the allowed roots or not a model: one message, so the form is no file-existence oracle.
    for name, path in (("m1", "../../no-such-model-dir"), ("m2", "/nowhere/model"), ("m3", str(tmp_path))):
        assert M.register(ctx, name, path, "hf", False, ADMIN) == (
            f"Error: {path}: not a model folder under the allowed roots ($CAI_MODEL_ROOTS)")
    assert M.register(ctx, "m4", "org/model", "hf", False, ADMIN) == "Registered m4 as model #1"
    assert models.get_model(db, "m4")["path"] == "org/model"
