"""What each node instance of a run is doing, kept up to date from the run's events, for a
live display in a terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


class Board:
    def __init__(self, run: dict[str, Any]) -> None:
        self.run_id = run["id"]
        self.module = run["module"]
        self.state = run["state"]
        self.abort: str | None = run.get("abort_reason")
        self.rows: dict[str, dict[str, str]] = {
            n["name"]: {
                "doing": "waiting for its machine",
                "address": n.get("hostname") or "",
                "says": "",
            }
            for n in run["nodes"]
        }

    def apply(self, event: dict[str, Any]) -> None:
        kind, message, who = event["kind"], event["message"], event.get("node_instance")
        if kind == "state" and " -> " in message:
            self.state = message.split(" -> ", 1)[1]
        elif kind == "abort":
            self.abort = message
        row = self.rows.get(who or "")
        if row is None:
            return
        if kind == "provisioned":
            row["address"] = message.removeprefix("running at ").split(" ", 1)[0]
            row["doing"] = "booting its agent"
        elif kind == "complete":
            row["doing"] = message
        elif kind == "display":
            row["says"] = message
        elif kind in ("lost", "provisioning-failed"):
            row["doing"] = f"[red]{kind}[/red]"
            row["says"] = message
        elif kind == "report":
            row["doing"] = "report sent"

    def __rich__(self) -> Table:
        title = f"run {self.run_id[:8]} of {self.module}: [bold]{self.state}[/bold]"
        if self.abort:
            title += f"  [red]aborted: {self.abort}[/red]"
        grid = Table(
            title=title, title_justify="left", box=None, header_style="bold", pad_edge=False
        )
        for column in ("NODE", "ADDRESS", "DOING", "SAYS"):
            grid.add_column(column, overflow="ellipsis", no_wrap=True)
        for name, row in sorted(self.rows.items()):
            grid.add_row(name, row["address"], row["doing"], row["says"])
        return grid
