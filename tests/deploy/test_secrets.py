"""What is secret in a run (the plan's closure over mappings), how listings show it, and the
redaction of secret values from what nodes send people."""

from __future__ import annotations

import textwrap
import time

import pytest
from sqlalchemy.engine import Engine

from stratuslab.db.session import session_scope
from stratuslab.deploy.keys import initial_rows
from stratuslab.deploy.model import Module, parse_module
from stratuslab.deploy.plan import Plan, resolve
from stratuslab.deploy.secrets import MASK, MAX_VALUES, RunSecrets, of_plan, pieces, shown
from stratuslab.errors import NotFound

MODULES = {
    "a/base": "kind: image\nimages: {local: debian-12}\n",
    "a/db": """
        kind: component
        parent: base
        outputs:
          password: {type: password}
          plain: {}
          copied: {}
    """,
    "a/web": """
        kind: component
        parent: base
        inputs:
          db_password: {}
          db_plain: {}
          db_copied: {type: password}
          key: {type: password}
          site_key: {type: password}
          other_site_key: {}
          host: {type: password}
          motd: {default: hi}
    """,
    # A child may make an inherited parameter a password, never a password plain text.
    "a/child": """
        kind: component
        parent: db
        outputs:
          password: {type: string, description: still secret}
          plain: {type: password}
    """,
    "a/app": """
        kind: application
        nodes:
          db: {component: child}
          web:
            component: web
            multiplicity: 2
            parameters:
              db_password: db:password
              db_plain: db:plain
              db_copied: db:copied
              key: "'literal-key'"
              site_key: ss:site_key
              other_site_key: ss:site_key
              host: db:hostname
    """,
}


def plan() -> Plan:
    parsed = {
        path: parse_module(textwrap.dedent(text).lstrip(), path=path, file=f"{path}.yaml")
        for path, text in MODULES.items()
    }

    def lookup(path: str, version: int | None) -> tuple[Module, int]:
        if path not in parsed:
            raise NotFound(path)
        return parsed[path], 1

    app = parsed["a/app"]
    assert app.kind == "application"
    return resolve(app, 1, lookup)  # type: ignore[arg-type]


def test_what_a_mapping_joins_to_a_password_is_secret() -> None:
    found = of_plan(plan())
    # Declared, inherited (the child's "string" does not undo it) and made so by a child.
    assert {"db:password", "db:plain", "web:db_copied", "web:key", "web:host"} <= found
    assert "web:db_password" in found  # copied from a secret output
    assert "web:db_plain" in found  # ... which the child made a password
    assert "db.1:copied" in found  # the source of a secret input holds the same value
    assert {"ss:site_key", "web:other_site_key"} <= found  # a global, and its other copies
    assert "db.1:hostname" not in found  # a fact of the server's, shown to all
    assert "web:motd" not in found
    # The plan keeps the types: a run's plan read back from the store says the same.
    assert of_plan(Plan.from_dict(plan().to_dict())) == found


def test_the_rows_a_run_starts_with_carry_the_flag() -> None:
    rows = {row.key: row for row in initial_rows(plan(), given={"ss:site_key": "k"}, tags="")}
    secret = {key for key, row in rows.items() if row.secret}
    assert {"db.1:password", "web.1:db_password", "web.2:db_password", "ss:site_key"} <= secret
    assert {"web.2:host", "web.1:key", "web.2:other_site_key", "db.1:copied"} <= secret
    assert not {"db.1:hostname", "web.1:hostname", "web.1:motd", "ss:tags"} & secret


def test_a_listing_masks_a_set_secret_only() -> None:
    assert shown("pw-123456", True) == MASK
    assert shown("pw-123456", True, show_secrets=True) == "pw-123456"
    assert shown(None, True) is None  # not set is not a secret
    assert shown("hello", False) == "hello"


def test_short_values_are_not_redacted_and_long_lines_one_by_one() -> None:
    assert pieces("12345") == []  # masking 12345 everywhere would garble and still tell it
    assert pieces("123456") == ["123456"]
    key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA\nab\n-----END KEY-----\n"
    assert pieces(key) == ["-----BEGIN KEY-----", "MIIEowIBAAKCAQEA", "-----END KEY-----"]


def test_redaction_masks_every_known_value_longest_first(engine: Engine) -> None:
    known = RunSecrets(engine)
    with session_scope(engine) as session:
        conn = session.connection()
        # No such row: marking it changes nothing in the store, and the value is remembered.
        assert known.stored(conn, "run-1", "db.1:password", "abcdef", mark=True)
        assert known.stored(conn, "run-1", "db.1:long", "xx-abcdef-yy", mark=True)
        assert known.stored(conn, "run-1", "db.1:short", "abc", mark=True)
        assert not known.stored(conn, "run-1", "db.1:plain", "plain-value")
    lines = ["pw abcdef and xx-abcdef-yy", "abc is too short", "plain-value", ""]
    assert known.redact_all("run-1", lines) == [
        f"pw {MASK} and {MASK}",
        "abc is too short",
        "plain-value",
        "",
    ]
    assert known.redact("run-2", "abcdef") == "abcdef"  # another run's secrets are its own


def test_redaction_keeps_the_newest_values_within_bounds(engine: Engine) -> None:
    known = RunSecrets(engine)
    values = [f"value-{i:06d}" for i in range(MAX_VALUES + 10)]
    with session_scope(engine) as session:
        for value in values:
            known.stored(session.connection(), "run-1", "db.1:password", value, mark=True)
    assert known.redact("run-1", values[0]) == values[0]  # the oldest were dropped
    assert known.redact("run-1", values[-1]) == MASK
    assert known.redact("run-1", values[10]) == MASK


@pytest.mark.parametrize("count", [1, MAX_VALUES])
def test_redacting_a_batch_is_cheap(engine: Engine, count: int) -> None:
    known = RunSecrets(engine)
    with session_scope(engine) as session:
        for i in range(count):
            known.stored(session.connection(), "run-1", "k", f"secret-{i:08d}", mark=True)
    batch = [f"line {i}: nothing to see here, just a recipe printing along" for i in range(1000)]
    batch[500] = f"the password is secret-{count - 1:08d}"
    started = time.perf_counter()
    redacted = known.redact_all("run-1", batch)
    took = time.perf_counter() - started
    assert redacted[500] == f"the password is {MASK}" and redacted[499] == batch[499]
    assert took < 0.5, f"{took:.3f} s to redact 1000 lines against {count} values"
