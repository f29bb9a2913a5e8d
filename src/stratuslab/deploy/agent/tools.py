"""SlipStream's node tools: ss-get, ss-set, ss-display, ss-abort, ss-random, ss-get-all.

Each tool is ``ss_<name>(argv) -> exit code``; :func:`run_tool` turns a :class:`ToolError` into
its one line on stderr (``ss-get: <what went wrong>``) and its code. Everything a tool imports is
paid for at every call, and propagation is measured from an ss-set to the return of an ss-get
in milliseconds: no json, no typing, no pathlib, no logging on this path.
"""

from __future__ import annotations

import os
import sys
import time

from .client import RunClient, connect
from .exits import NOT_SET, OK, TIMED_OUT, USAGE, ToolError
from .options import KEY_HELP, ToolParser, ignore_abort_option, secret_option, size, wait_options
from .protocol import MAX_WAIT

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Callable

NOBLOCK_RETRY_FOR = 5  # seconds a --noblock tool retries a server that is down
ALPHANUMERICS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def wait_for(
    client: RunClient,
    key: str,
    *,
    timeout: float,
    started: float,
    noblock: bool = False,
    ignore_abort: bool = False,
) -> str:
    """The value of ``key``, waiting (long-polls of at most a minute) until ``timeout``
    seconds after ``started`` (0: for ever) for it to be set. Retrying a server that is down
    stops then too, and after ``NOBLOCK_RETRY_FOR`` seconds with ``noblock``."""
    import math

    if noblock:
        deadline = time.monotonic() + NOBLOCK_RETRY_FOR
        value = client.get(key, ignore_abort=ignore_abort, deadline=deadline)
        if value is None:
            raise ToolError(NOT_SET, f"'{key}' is not set")
        return value
    ends = started + timeout if timeout else None
    while True:
        remaining = ends - time.monotonic() if ends is not None else MAX_WAIT
        if remaining <= 0:
            raise ToolError(TIMED_OUT, f"timed out after {timeout:g} s waiting for '{key}'")
        wait = min(MAX_WAIT, max(1, math.ceil(remaining)))
        value = client.poll(key, wait=wait, ignore_abort=ignore_abort, deadline=ends)
        if value is not None:
            return value


def random_text(count: int) -> str:
    """``count`` random letters and digits, from os.urandom (``secrets`` costs ~8 ms to import).

    A byte below 248 (4 x 62) stands for ``ALPHANUMERICS[byte % 62]``, each character four
    times; the 8 bytes above are drawn again, so that every character is equally likely.
    """
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += [ALPHANUMERICS[byte % 62] for byte in os.urandom(count + 8) if byte < 248]
    return "".join(drawn[:count])


def ss_get(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-get", description="Print a runtime parameter's value.")
    wait_options(parser)
    ignore_abort_option(parser)
    parser.add_argument("key", help=KEY_HELP)
    args = parser.parse_args(argv)
    client = connect(os.environ)
    value = wait_for(
        client,
        client.qualify(args.key),
        timeout=args.timeout,
        started=time.monotonic(),
        noblock=args.noblock,
        ignore_abort=args.ignore_abort,
    )
    print(value)
    return OK


def ss_set(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-set", description="Set a runtime parameter.")
    ignore_abort_option(parser)
    secret_option(parser)
    parser.add_argument("key", help=KEY_HELP)
    parser.add_argument("value", help="the value (empty unsets it)")
    args = parser.parse_args(argv)
    client = connect(os.environ)
    client.set(
        client.qualify(args.key), args.value, ignore_abort=args.ignore_abort, secret=args.secret
    )
    return OK


def ss_display(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-display", description="Show a message as this node's state.")
    ignore_abort_option(parser)
    parser.add_argument("text", nargs="+", help="the message")
    args = parser.parse_args(argv)
    connect(os.environ).display(" ".join(args.text), ignore_abort=args.ignore_abort)
    return OK


def ss_abort(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-abort", description="Abort the run, giving a reason.")
    parser.add_argument("--cancel", action="store_true", help="clear this node's own abort flag")
    parser.add_argument("reason", nargs="*", help="why (the first reason raised wins)")
    args = parser.parse_args(argv)
    client = connect(os.environ)
    default = f"aborted by ss-abort on {client.config.node_instance}"
    client.abort("" if args.cancel else " ".join(args.reason) or default)
    return OK


def ss_random(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-random", description="Print random letters and digits.")
    parser.add_argument("-s", "--size", default="12", type=size, help="how many (default 12)")
    secret_option(parser)
    parser.add_argument("key", nargs="?", help="also set this runtime parameter to them")
    args = parser.parse_args(argv)
    if args.secret and not args.key:
        raise ToolError(USAGE, "--secret marks the KEY set: give one (ss-random --secret KEY)")
    value = random_text(args.size)
    if args.key:
        client = connect(os.environ)
        client.set(client.qualify(args.key), value, secret=args.secret)
    print(value)
    return OK


def ss_get_all(argv: list[str]) -> int:
    parser = ToolParser(prog="ss-get-all", description="Print a parameter of every instance.")
    parser.add_argument("--value", help="exit 1 if any instance's value differs from this one")
    wait_options(parser)
    ignore_abort_option(parser)
    parser.add_argument("node", help="the node's name, e.g. web")
    parser.add_argument("key", help="the parameter's bare name, e.g. ready")
    args = parser.parse_args(argv)
    if ":" in args.key or ":" in args.node or "." in args.node:
        raise ToolError(USAGE, "give a node name and a bare parameter name: ss-get-all web ready")
    client = connect(os.environ)
    started = time.monotonic()  # one deadline for all the values, not one per instance

    def value_of(key: str) -> str:
        return wait_for(
            client,
            key,
            timeout=args.timeout,
            started=started,
            noblock=args.noblock,
            ignore_abort=args.ignore_abort,
        )

    ids = [i.strip() for i in value_of(f"{args.node}:ids").split(",") if i.strip()]
    values = [(f"{args.node}.{i}:{args.key}", value_of(f"{args.node}.{i}:{args.key}")) for i in ids]
    for key, value in values:
        print(key, value)
    different = [key for key, value in values if args.value is not None and value != args.value]
    if different:
        raise ToolError(NOT_SET, f"{', '.join(different)} not equal to {args.value!r}")
    return OK


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "ss-get": ss_get,
    "ss-set": ss_set,
    "ss-display": ss_display,
    "ss-abort": ss_abort,
    "ss-random": ss_random,
    "ss-get-all": ss_get_all,
}
TOOL_NAMES = tuple(TOOLS)


def run_tool(name: str, argv: list[str]) -> int:
    try:
        return TOOLS[name](argv)
    except ToolError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return exc.code
