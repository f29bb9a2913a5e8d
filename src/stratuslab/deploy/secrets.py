"""Secrets: what is secret in a run, and how it is kept out of what people read.

A runtime parameter is secret when its module declares it ``type: password``, when a mapping
joins it to one (:func:`of_plan`: a copy of a secret is a secret),
or when a node set it with ``ss-random --secret`` or ``ss-set --secret``. The row's ``secret``
column says so, and once secret a parameter stays secret: a later write without the flag does
not make it readable.

Who sees what:

- Listings (``GET /api/runs/<id>/params``, ``stratus run params``, the ``/run/<uuid>`` XML,
  the run view) show :data:`MASK` for a secret that is set, and mask the run's secret values
  inside the other values (a URL a recipe built with the password in it). The run's owner or
  an administrator sees the values on explicit request (``show_secrets``); a node's token
  never gets them in bulk.
- One value read by its name (``ss-get``, ``GET /run/<uuid>/<key>``) is answered to the run's
  own node instances, any of them, as SlipStream did: that is how web learns db's password,
  and wiring needs it. The owner may read one by its name too; nobody else reaches the run.
- Text that nodes write and people read (recipe output, abort reasons, ``ss-display`` text)
  has every secret value of the run known when it arrives replaced by :data:`MASK`
  (:meth:`RunSecrets.redact`). A value shorter than :data:`MIN_REDACTED` characters is left:
  masking ``1234`` or ``true`` wherever it appears would garble every line and, by where the
  stars fall, tell the value anyway; a secret that short is guessed, not read. Each line of a
  multi-line secret (a PEM key) is redacted on its own, since output arrives line by line.
  Reports are archives the recipes fill: what a recipe copies into ``$SLIPSTREAM_REPORT_DIR``,
  and the recipe logs the agent puts beside it, are the recipe author's to keep clean.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.engine import Connection, Engine

from stratuslab.db.models import RuntimeParameterRecord
from stratuslab.db.session import reading
from stratuslab.deploy.agent.protocol import STANDARD_PARAMETERS
from stratuslab.deploy.plan import Plan

MASK = "********"


def secret_topic(run_id: str) -> str:
    """Where a secret value newly set in a run is announced (its value is not sent)."""
    return f"secret:{run_id}"


MIN_REDACTED = 6  # characters: shorter values are not redacted (see the module docstring)
# Bounds on what one process keeps for redaction: the values of at most RUNS_KEPT runs (read
# again from the store when needed), and of each at most MAX_VALUES values and MAX_CHARS
# characters, the newest kept (16 MiB at most in all). Each value is looked for once in a
# whole batch, about 1 ns a character: 1000 lines of 55 characters take 0.1 ms against one
# value and 14 ms against 256; the largest batch a node may send (1000 lines of 12 KiB, as
# logs.py looks at them) about 3 s of one core against 256, its own run's cost.
RUNS_KEPT = 128
MAX_VALUES = 256
MAX_CHARS = 128 * 1024

_PARAMS = cast(Table, RuntimeParameterRecord.__table__)
_IS_SECRET = select(_PARAMS.c.secret).where(
    _PARAMS.c.run_id == bindparam("b_run"), _PARAMS.c.key == bindparam("b_key")
)
_MARK = (
    update(_PARAMS)
    .where(
        _PARAMS.c.run_id == bindparam("b_run"),
        _PARAMS.c.key.in_(bindparam("b_keys", expanding=True)),
    )
    .values(secret=True)
)
_SECRET_VALUES = (
    select(_PARAMS.c.value)
    .where(
        _PARAMS.c.run_id == bindparam("b_run"),
        _PARAMS.c.secret.is_(True),
        _PARAMS.c.value.is_not(None),
    )
    .order_by(_PARAMS.c.set_at)
)
_SECRET_KEYS = select(_PARAMS.c.key).where(
    _PARAMS.c.run_id == bindparam("b_run"), _PARAMS.c.secret.is_(True)
)


def shown(value: str | None, secret: bool, *, show_secrets: bool = False) -> str | None:
    """A parameter's value as a listing shows it: :data:`MASK` for a secret that is set."""
    if secret and value is not None and not show_secrets:
        return MASK
    return value


def pieces(value: str) -> list[str]:
    """What of ``value`` is redacted: the value, or each line of a multi-line one, whatever is
    at least :data:`MIN_REDACTED` characters long."""
    parts = [part.strip() for part in value.splitlines()] if "\n" in value else [value]
    return [part for part in parts if len(part) >= MIN_REDACTED]


def of_plan(plan: Plan) -> frozenset[str]:
    """The parameters a run of ``plan`` keeps secret: ``node:name`` for that parameter of
    every instance of the node, ``node.1:name`` or ``ss:name`` for one key.

    Those declared ``type: password``, and whatever a mapping joins to one: the inputs mapped
    from a secret source, and the source of a secret input. A mapping copies a value, and a
    copy of a secret is a secret wherever it lands. The parameters every node instance has
    (``hostname``, ...) are never secret: they are the server's facts, shown to whoever looks
    at the run; an input mapped from one is secret only if it says so itself.
    """
    found = {
        f"{node}:{name}"
        for node, spec in plan.nodes.items()
        for name, parameter in (*spec.inputs.items(), *spec.outputs.items())
        if parameter.secret
    }
    mapped = [
        (f"{node}:{target}", source)
        for node, spec in plan.nodes.items()
        for target, source in spec.mappings.items()
        if source.key() is not None
        and not (source.kind == "parameter" and source.name in STANDARD_PARAMETERS)
    ]
    secret_sources = {
        str(source.key())
        for target, source in mapped
        if target in found or f"{source.node}:{source.name}" in found
    }
    found |= secret_sources
    found |= {target for target, source in mapped if source.key() in secret_sources}
    return frozenset(found)


def secret_keys(conn: Connection, run_id: str) -> set[str]:
    """The keys of the run that are secret now (declared so, or marked by a node)."""
    return set(conn.execute(_SECRET_KEYS, {"b_run": run_id}).scalars())


class _Known:
    """The secret values of one run, oldest first, within the bounds."""

    def __init__(self) -> None:
        self.values: OrderedDict[str, None] = OrderedDict()
        self.chars = 0
        self.loaded = False  # whether what the store held has been read

    def add(self, value: str) -> None:
        for piece in pieces(value):
            if piece in self.values:
                self.values.move_to_end(piece)
                continue
            self.values[piece] = None
            self.chars += len(piece)
            while len(self.values) > MAX_VALUES or self.chars > MAX_CHARS:
                dropped, _ = self.values.popitem(last=False)
                self.chars -= len(dropped)


class RunSecrets:
    """The secret values of runs, for redaction, and the marking of secret parameters.

    What a run's secrets are is read from the store the first time it is needed, and every
    secret value set afterwards through :meth:`stored` is added before its transaction
    commits: nobody can have read a value that is not yet redacted from what they send back.
    Values stay in the set when they change (an old password is still one), within bounds.

    The set is per process. With several processes on one store, a secret set through
    another is announced on :func:`secret_topic` (``ParameterValues.put``), whose arrival
    makes this process forget the run's set (:meth:`forget`, wired in ``services.py``); and
    ``sync`` (the hub's fence) is asked before each use, so that a secret set elsewhere
    before text reaches this process is known when it is redacted. When the fence fails
    (the store away), the run's set is read from the store again.
    """

    def __init__(self, engine: Engine, *, sync: Callable[[], bool] | None = None) -> None:
        self.engine = engine
        self.sync = sync
        self._runs: OrderedDict[str, _Known] = OrderedDict()
        self._lock = threading.Lock()

    def stored(
        self, conn: Connection, run_id: str, key: str, value: str | None, *, mark: bool = False
    ) -> bool:
        """Whether ``key``, just set to ``value`` in this transaction, is secret (made so
        first if ``mark``); a secret value is remembered for redaction."""
        if mark:
            self.mark(conn, run_id, [key])
            secret = True
        else:
            secret = bool(conn.execute(_IS_SECRET, {"b_run": run_id, "b_key": key}).scalar())
        if secret and value:
            with self._lock:
                self._entry(run_id).add(value)
        return secret

    def mark(self, conn: Connection, run_id: str, keys: Collection[str]) -> None:
        """Make ``keys`` of the run secret, for good."""
        if keys:
            conn.execute(_MARK, {"b_run": run_id, "b_keys": list(keys)})

    def redact(self, run_id: str, text: str) -> str:
        """``text`` with every known secret value of the run replaced by :data:`MASK`."""
        return self.redact_all(run_id, [text])[0]

    def redact_all(self, run_id: str, texts: Sequence[str]) -> list[str]:
        """:meth:`redact` of each of ``texts`` (a batch of output lines). Each value is
        looked for once in the whole batch, and replaced only in the lines that hold it."""
        values = self._values(run_id)
        if not values or not texts:
            return list(texts)
        joined = "\n".join(texts)
        present = [value for value in values if value in joined]
        if not present:
            return list(texts)
        present.sort(key=len, reverse=True)  # a value inside a longer one goes after it
        out = []
        for text in texts:
            for value in present:
                if value in text:
                    text = text.replace(value, MASK)
            out.append(text)
        return out

    def redact_values(self, run_id: str, values: dict[str, str | None]) -> dict[str, str | None]:
        """A listing's values (key -> value) with the run's secret values masked inside them:
        a value a node built from a secret (a URL with a password in it) is shown redacted."""
        if not self._values(run_id):
            return values  # most runs: nothing to look for
        keys = [key for key, value in values.items() if value]
        texts = self.redact_all(run_id, [values[key] or "" for key in keys])
        return values | dict(zip(keys, texts, strict=True))

    def forget(self, run_id: str) -> None:
        """Drop what is known of the run's secrets: it is read from the store when needed."""
        with self._lock:
            self._runs.pop(run_id, None)

    def _values(self, run_id: str) -> list[str]:
        if self.sync is not None and not self.sync():
            self.forget(run_id)
        with self._lock:
            known = self._runs.get(run_id)
            if known is not None and known.loaded:
                self._runs.move_to_end(run_id)
                return list(known.values)
        with reading(self.engine) as conn:
            found = [str(v) for v in conn.execute(_SECRET_VALUES, {"b_run": run_id}).scalars()]
        with self._lock:
            known = self._entry(run_id)
            if not known.loaded:
                # Merged under what was added meanwhile, which is newer than what was read.
                newer = list(known.values)
                known.values.clear()
                known.chars = 0
                for value in [*found, *newer]:
                    known.add(value)
                known.loaded = True
            return list(known.values)

    def _entry(self, run_id: str) -> _Known:
        """The run's entry, made if need be (the lock held)."""
        known = self._runs.get(run_id)
        if known is None:
            known = self._runs[run_id] = _Known()
            while len(self._runs) > RUNS_KEPT:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run_id)
        return known
