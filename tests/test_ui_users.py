"""Users: scrypt hashes, roles, the first admin, and the `cai users` commands."""

from __future__ import annotations

import json

import pytest

from cai import users
from cai.cli import main


def test_hash_is_salted_scrypt_and_verifies():
    h1, h2 = users.hash_password("correct horse"), users.hash_password("correct horse")
    assert h1 != h2  # a fresh salt each time
    assert h1.startswith("scrypt$16384$8$1$")
    assert users.verify_password("correct horse", h1) is True
    assert users.verify_password("wrong horse", h1) is False
    assert users.verify_password("x", "not-a-hash") is False


def test_add_authenticate_roles(db):
    users.add_user(db, "ada", "admin", "password1")
    users.add_user(db, "val", "viewer", "password2")
    assert users.authenticate(db, "ada", "password1")["role"] == "admin"
    assert users.authenticate(db, "ada", "password2") is None
    assert users.authenticate(db, "nobody", "password1") is None
    assert [(u["name"], u["role"]) for u in users.list_users(db)] == [("ada", "admin"), ("val", "viewer")]
    assert "password_hash" not in users.list_users(db)[0]
    users.set_role(db, "val", "rater")
    assert users.role_of(db, "val") == "rater"
    assert users.role_of(db, None) is None
    users.set_password(db, "val", "newpassword")
    assert users.authenticate(db, "val", "newpassword") is not None
    users.remove_user(db, "val")
    assert users.get_user(db, "val") is None


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("", "admin", "password1", "must be non-empty"),
        (" ada", "admin", "password1", "no surrounding spaces"),
        ("ada", "boss", "password1", "role 'boss' is not one of admin, viewer, rater"),
        ("ada", "admin", "short", "at least 8 characters"),
    ],
)
def test_bad_users_are_refused(db, name, role, password, message):
    with pytest.raises(users.UserError, match=message):
        users.add_user(db, name, role, password)
    assert db["users"].count == 0


def test_duplicate_user(db):
    users.add_user(db, "ada", "admin", "password1")
    with pytest.raises(users.UserError, match="a user named 'ada' already exists"):
        users.add_user(db, "ada", "viewer", "password1")


def test_ensure_admin_only_on_an_empty_table(db):
    assert users.ensure_admin(db, "given-password") == "given-password"
    assert users.authenticate(db, "admin", "given-password")["role"] == "admin"
    assert users.ensure_admin(db) is None  # users exist: nothing created, nothing printed
    assert db["users"].count == 1


def test_cli_add_list_role_remove(db_path, capsys, monkeypatch):
    monkeypatch.delenv("CAI_PASSWORD", raising=False)
    assert main(["users", "add", "ada", "--role", "admin", "--password", "password1", "--db", str(db_path)]) == 0
    # No password and no terminal: one is generated and printed once.
    assert main(["users", "add", "rae", "--role", "rater", "--db", str(db_path), "--json"]) == 0
    out = capsys.readouterr().out
    generated = json.loads(out[out.index("{"):])["password"]
    assert len(generated) >= 12
    assert main(["users", "role", "rae", "viewer", "--db", str(db_path)]) == 0
    assert main(["users", "list", "--db", str(db_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [(u["name"], u["role"]) for u in listed] == [("ada", "admin"), ("rae", "viewer")]
    assert main(["users", "add", "ada", "--role", "admin", "--password", "password1", "--db", str(db_path)]) == 2
    assert "error: a user named 'ada' already exists" in capsys.readouterr().err
    assert main(["users", "remove", "rae", "--db", str(db_path)]) == 0
    assert main(["users", "remove", "rae", "--db", str(db_path)]) == 2
    assert "error: no user named 'rae'" in capsys.readouterr().err


def test_every_users_command_and_option_has_help():
    import argparse

    from cai.cli import make_parser

    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    users_parser = sub.choices["users"]
    actions = next(a for a in users_parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(actions.choices) == ["add", "list", "passwd", "remove", "role", "unlock"]
    for name, parser in actions.choices.items():
        assert any(c.dest == name and c.help for c in actions._choices_actions), name
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"users {name}: {action.dest} has no help"
