"""What each node instance of a run is doing, kept up to date from the run's events, for a
live display in a terminal.

It reads the events' kinds and fields (``deploy/events.py``), never their prose. Whatever a
node controls (its display text, an abort reason) is shown as plain text, never read as markup.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text


class Board:
    def __init__(self, run: dict[str, Any]) -> None:
        self.run_id = run["id"]
        self.module = run["module"]
        self.state = run["state"]
        self.abort: str | None = run.get("abort_reason")
        self.baked = {node: str(b["image"]) for node, b in (run.get("baked") or {}).items()}
        self.rows: dict[str, dict[str, Text]] = {
            n["name"]: {
                "doing": Text("waiting for its machine"),
                "address": Text(n.get("hostname") or ""),
                "says": Text(n.get("statecustom") or ""),
            }
            for n in run["nodes"]
        }

    def apply(self, event: dict[str, Any]) -> None:
        kind, who = event["kind"], event.get("node_instance")
        fields: dict[str, Any] = event.get("fields") or {}
        if kind == "state":
            self.state = str(fields.get("state", self.state))
        elif kind == "abort":
            self.abort = str(fields.get("reason", ""))
        row = self.rows.get(who or "")
        if row is None:
            return
        if kind == "provisioned":
            row["address"] = Text(str(fields.get("address", "")))
            row["doing"] = Text("booting its agent")
        elif kind == "complete":
            row["doing"] = Text(f"completed {fields.get('state', '')}")
        elif kind == "display":
            row["says"] = Text(str(fields.get("text", "")))
        elif kind in ("lost", "provisioning-failed"):
            row["doing"] = Text(kind, style="red")
            row["says"] = Text(str(fields.get("reason", "")))
        elif kind == "report":
            row["doing"] = Text("report sent")

    def __rich__(self) -> Table:
        title = Text(f"run {self.run_id[:8]} of {self.module}: ")
        title.append(self.state, style="bold")
        if self.abort:
            title.append(f"  aborted: {self.abort}", style="red")
        grid = Table(
            title=title, title_justify="left", box=None, header_style="bold", pad_edge=False
        )
        for column in ("NODE", "ADDRESS", "DOING", "SAYS"):
            grid.add_column(column, overflow="ellipsis", no_wrap=True)
        for name, row in sorted(self.rows.items()):
            grid.add_row(Text(name), row["address"], row["doing"], row["says"])
        if self.baked:
            grid.caption = Text(
                "; ".join(
                    f"{n}: baked image {i}, install steps skipped"
                    for n, i in sorted(self.baked.items())
                )
            )
            grid.caption_justify = "left"
        return grid
