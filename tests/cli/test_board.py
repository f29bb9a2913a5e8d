from __future__ import annotations

from typing import Any

from rich.console import Console

from stratuslab.cli.board import Board
from stratuslab.deploy import events as ev


def render(board: Board) -> str:
    console = Console(record=True, width=120)
    console.print(board)
    return console.export_text()


def sent(event: ev.RunEvent) -> dict[str, Any]:
    """The event as the server sends it."""
    return ev.to_dict(1, "2026-12-01T10:00:00+00:00", event)


def two_nodes() -> Board:
    run = {"id": "3f2a9c1e-aaaa", "module": "examples/webapp/2", "state": "Initializing", "nodes": [
        {"name": "db.1", "hostname": None}, {"name": "web.1", "hostname": None},
    ]}  # fmt: skip
    return Board(run)


def test_the_board_follows_each_node_instance_from_the_events() -> None:
    board = two_nodes()
    for event in (
        ev.state_changed("Initializing", "Provisioning"),
        ev.provisioned("db.1", "10.210.0.7", "i-0a1b2c3d4e"),
        ev.completed("db.1", "Provisioning"),
        ev.displayed("db.1", "PostgreSQL ready"),
        ev.lost("web.1", "its machine i-9 is gone"),
        ev.aborted("web.1: its machine i-9 is gone", "web.1"),
        ev.state_changed("Provisioning", "SendingReports"),
    ):
        board.apply(sent(event))
    text = render(board)
    flat = " ".join(text.split())
    assert "run 3f2a9c1e of examples/webapp/2: SendingReports" in flat
    assert "aborted: web.1: its machine i-9 is gone" in flat
    db = next(line for line in text.splitlines() if line.startswith("db.1"))
    assert "10.210.0.7" in db and "completed Provisioning" in db and "PostgreSQL ready" in db
    web = next(line for line in text.splitlines() if line.startswith("web.1"))
    assert "lost" in web


def test_the_board_reads_fields_not_the_sentence() -> None:
    board = two_nodes()
    event = sent(ev.provisioned("db.1", "10.210.0.9", "i-1"))
    event["message"] = "something else entirely"
    board.apply(event)
    assert "10.210.0.9" in render(board)


def test_what_a_node_says_is_shown_as_it_is_never_as_markup() -> None:
    """`ss-display "[/]"` once crashed the live board (Rich read it as a closing tag)."""
    board = two_nodes()
    for text in ("[/]", "[bold]not bold[/bold]", "[link=http://x]y"):
        board.apply(sent(ev.displayed("db.1", text)))
        board.apply(sent(ev.aborted(f"db.1: {text}", "db.1")))
        rendered = render(board)
        assert text in rendered
