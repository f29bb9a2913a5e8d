"""What the server and the node agent must agree on, defined once for both.

The agent runs inside images we do not control, so this module is standard library only and
imports nothing of the project; the server imports it from here (``deploy/params.py``,
``deploy/states.py``, the ``/run`` routes), the agent ships it inside its zipapp. A test runs the
same table of names through both sides.

Runtime parameter names follow SlipStream (``shared/SLIPSTREAM_PROTOCOL.md``):

- ``web.2:hostname``: a parameter of node instance 2 of node ``web``;
- ``web:hostname``: the same of instance 1, except the node-level ``web:ids`` and
  ``web:multiplicity``, which belong to the node;
- ``ss:state``: a run global;
- a bare ``hostname`` from a node is its own instance's (``web.2:hostname``); a bare ``ids``
  or ``multiplicity`` its node's (``web:ids``).
"""

from __future__ import annotations

# The run's states, in the order a run goes through them, and how runs end.
INITIALIZING = "Initializing"
PROVISIONING = "Provisioning"
EXECUTING = "Executing"
SENDING_REPORTS = "SendingReports"
READY = "Ready"
FINALIZING = "Finalizing"
DONE = "Done"
ABORTED = "Aborted"
CANCELLED = "Cancelled"
STATES = (INITIALIZING, PROVISIONING, EXECUTING, SENDING_REPORTS, READY, FINALIZING)
FINAL_STATES = (DONE, ABORTED, CANCELLED)
BARRIER_STATES = (PROVISIONING, EXECUTING, SENDING_REPORTS, READY)  # nodes complete these

MAX_VALUE = 4096  # characters in a runtime parameter value, as in SlipStream
# Where a recipe starts and ends, sent among its output lines as lines of this stream whose
# text is a JSON object: {"event": "start", "n": 1, "module": ...}, then {"event": "end",
# "n": 1, "module": ..., "code": 0, "stopped": false}. The server keeps them beside the output
# for the JUnit report (deploy/junit.py) and shows them in no log; an agent that sends none
# (an older one) still works, its report is only less precise.
PHASE_STREAM = "phase"
MAX_WAIT = 60  # seconds the server holds one long-poll of a parameter
DEFAULT_CLOUD = "local"

GLOBAL_SCOPE = "ss"
NODE_LEVEL = ("ids", "multiplicity")  # <node>:ids is the node's, never <node>.1:ids

# Parameters of every node instance (SlipStream's standard set).
STANDARD_PARAMETERS = (
    "state",
    "statecustom",
    "vmstate",
    "abort",
    "complete",
    "hostname",
    "instanceid",
    "url.ssh",
    "url.service",
    "nodename",
    "id",
    "cloudservice",
    "image.id",
)
# Answered from the run itself, never stored.
COMPUTED = ("state", "complete")
# Facts the server states about a node instance: no node may write them.
SERVER_OWNED = (
    "state",
    "complete",
    "vmstate",
    "hostname",
    "instanceid",
    "url.ssh",
    "nodename",
    "id",
    "cloudservice",
    "image.id",
)
# Run globals the server keeps (ss:abort changes only through an abort).
SERVER_GLOBALS = ("state", "abort", "category")
# Run globals every run has, which a recipe may set as SlipStream's could.
RECIPE_GLOBALS = ("url.service", "tags")


def qualify(key: str, node_instance: str | None) -> str:
    """The full name of ``key`` as asked by ``node_instance`` (None: asked by a user).

    >>> qualify("hostname", "web.2"), qualify("ids", "web.2"), qualify("db:port", "web.2")
    ('web.2:hostname', 'web:ids', 'db.1:port')
    >>> qualify("web.1:ids", None), qualify("ss:tags", "web.2")
    ('web:ids', 'ss:tags')

    A key that is not a name at all is returned as it is, for the server to refuse.
    """
    owner, colon, name = key.partition(":")
    if not colon:
        if node_instance is None:
            return key
        if key in NODE_LEVEL:
            return f"{node_instance.rpartition('.')[0]}:{key}"
        return f"{node_instance}:{key}"
    if owner == GLOBAL_SCOPE:
        return key
    node, dot, _index = owner.partition(".")
    if name in NODE_LEVEL:
        return f"{node}:{name}"
    if dot:
        return key
    return f"{owner}.1:{name}"
