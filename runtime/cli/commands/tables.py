"""Tables that ``vsr-bench`` and ``vsr-parity`` print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(table: Table) -> None:
    """Print ``table`` to standard output: on a terminal at the terminal's width; into a pipe or a
    file at the width the table needs, so that no column is folded or cut (rich would assume 80)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=Console(width=100_000).measure(table).maximum)
    console.print(table)
