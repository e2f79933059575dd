"""#25.8: every numeric field of every config (and campaign) is bounded from one table (`cai.config.UPPER` and
the fields' metadata), checked before anything is created; user names are bounded and printable."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cai import arena, models, users
from cai.cli import main as cai
from cai.config import UPPER, ConfigError, check_number
from cai.stages import REGISTRY
from cai.stages.sl import SLConfig


def numeric_fields():
    for kind, stage in REGISTRY.items():
        cls = getattr(stage, "config", stage)
        for f in dataclasses.fields(cls):
            if str(f.type).split(" |")[0] in ("int", "float"):
                yield kind, f


def test_every_numeric_field_of_every_stage_has_an_upper_bound():
    fields = list(numeric_fields())
    assert len(fields) > 40
    unbounded = [(kind, f.name) for kind, f in fields
                 if f.metadata.get("max") is None and f.name not in UPPER
                 and not str(f.metadata.get("ref", "")).startswith("runs:")]
    assert unbounded == []  # only run ids are bounded by what SQLite stores
    for _kind, f in fields:
        for bad in (10**30, math.nan, math.inf):
            with pytest.raises(ConfigError, match=f"^{f.name}: must be"):
                check_number(f.name, bad, f.metadata.get("min"), f.metadata.get("max"))


def test_a_config_refuses_huge_and_non_finite_numbers_by_name():
    with pytest.raises(ConfigError, match=r"^limit: must be <= 10000000, got 99999999999999991611392$"):
        SLConfig.from_dict({"prompts": "red", "limit": 1e23})  # a form sends floats
    with pytest.raises(ConfigError, match=r"^temperature: must be a finite number, got nan$"):
        SLConfig.from_dict({"prompts": "red", "temperature": "nan"})
    with pytest.raises(ConfigError, match=r"^max_new_tokens: must be <= 65536, got 999999999999999999999$"):
        SLConfig.from_dict({"prompts": "red", "max_new_tokens": "999999999999999999999"})
    assert SLConfig.from_dict({"prompts": "red", "limit": 10_000_000}).limit == 10_000_000


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-new-tokens", "999999999999999999999"], "max_new_tokens: must be <= 65536, got 999999999999999999999"),
    (["--max-new-tokens", "1000000000", "--max-turns", "1000000000"], "max_turns: must be <= 100, got 1000000000"),
    (["--temperature", "nan"], "temperature: must be a finite number, got nan"),
    (["--vote-cap", "-1"], "need vote_cap >= 0, max_turns >= 1, max_new_tokens >= 1 and temperature >= 0"),
])
def test_campaign_numbers_are_bounded_before_the_campaign_is_made(db, db_path, capsys, flags, message):
    for n in ("m1", "m2"):
        models.register_model(db, n, "tiny")
    argv = ["arena", "campaign", "create", "c", "--models", "m1,m2", "--dimension", "helpfulness",
            "--allow-test-models", *flags, "--db", str(db_path)]
    assert cai(argv) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert arena.list_campaigns(db) == []


def test_run_sl_with_a_huge_limit_creates_no_run(db, db_path, capsys):
    assert cai(["run", "sl", "--limit", "1" + "0" * 23, "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == "error: limit: must be <= 10000000, got 100000000000000000000000\n"
    assert db["runs"].count == 0


@pytest.mark.parametrize(("name", "message"), [
    ("a\tb", "no control or invisible format characters"), ("x" * 300, "at most 64 characters, got 300"),
    ("a\u200bb", "no control or invisible format characters"), ("new\nline", "no control"),
])
def test_user_names_are_printable_and_bounded(db, name, message):
    with pytest.raises(users.UserError, match=message):
        users.add_user(db, name, "rater", "password1")
    assert users.add_user(db, "x" * 64, "rater", "password1") == 1
