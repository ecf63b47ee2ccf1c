"""The `lamina` commands' tables: columns padded to their widest cell, the header in bold
(plain when the output is not a terminal: `click.echo` drops the styling then)."""

from __future__ import annotations

from collections.abc import Sequence

import click


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if i == 0 else line)
