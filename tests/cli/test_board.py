from __future__ import annotations

from rich.console import Console

from stratuslab.cli.board import Board


def render(board: Board) -> str:
    console = Console(record=True, width=120)
    console.print(board)
    return console.export_text()


def test_the_board_follows_each_node_instance_from_the_events() -> None:
    run = {"id": "3f2a9c1e-aaaa", "module": "examples/webapp/2", "state": "Initializing", "nodes": [
        {"name": "db.1", "hostname": None}, {"name": "web.1", "hostname": None},
    ]}  # fmt: skip
    board = Board(run)
    events = [
        {"kind": "state", "message": "Initializing -> Provisioning", "node_instance": None},
        {
            "kind": "provisioned",
            "message": "running at 10.210.0.7 (i-0a1b2c3d4e)",
            "node_instance": "db.1",
        },
        {"kind": "complete", "message": "completed Provisioning", "node_instance": "db.1"},
        {"kind": "display", "message": "PostgreSQL ready", "node_instance": "db.1"},
        {"kind": "lost", "message": "its machine i-9 is gone", "node_instance": "web.1"},
        {"kind": "abort", "message": "web.1: its machine i-9 is gone", "node_instance": None},
        {"kind": "state", "message": "Provisioning -> SendingReports", "node_instance": None},
    ]
    for event in events:
        board.apply(event)
    text = render(board)
    flat = " ".join(text.split())
    assert "run 3f2a9c1e of examples/webapp/2: SendingReports" in flat
    assert "aborted: web.1: its machine i-9 is gone" in flat
    db = next(line for line in text.splitlines() if line.startswith("db.1"))
    assert "10.210.0.7" in db and "completed Provisioning" in db and "PostgreSQL ready" in db
    web = next(line for line in text.splitlines() if line.startswith("web.1"))
    assert "lost" in web
