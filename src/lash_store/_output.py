"""Terminal output of ``lash-store``: through ``rich`` when it is installed, as plain text otherwise.

``rich`` comes with the ``cli`` extra only, and ``pip install lash-store``
must still give a working command.  So the commands describe what they print
(tables, and literal text with an optional style) and :class:`Output` renders
it: with rich, as rich tables and markup; without, as aligned plain-text
columns with the styles dropped.  Nothing here imports rich unless it is
installed.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table as RichTable

__all__ = ["HAVE_RICH", "Output", "Table"]

HAVE_RICH = importlib.util.find_spec("rich") is not None

Justify = Literal["left", "right"]

_PLAIN_GAP = "  "


@dataclass
class _Column:
    header: str
    justify: Justify
    style: str | None
    no_wrap: bool
    fold: bool


@dataclass
class Table:
    """A table described once, rendered by :meth:`Output.print` with or without rich.

    Cells are strings made by :meth:`Output.text` or :meth:`Output.styled`, so they
    are rich markup exactly when the output is rendered by rich.
    """

    title: str | None = None
    show_header: bool = True
    columns: list[_Column] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add_column(
        self,
        header: str,
        *,
        justify: Justify = "left",
        style: str | None = None,
        no_wrap: bool = False,
        fold: bool = False,
    ) -> None:
        """``style``, ``no_wrap`` and ``fold`` (break long cells anywhere) matter to rich only."""
        self.columns.append(_Column(header, justify, style, no_wrap, fold))

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def to_rich(self) -> RichTable:
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, show_header=self.show_header, title_justify="left", title_style="bold")
        for column in self.columns:
            table.add_column(
                column.header,
                justify=column.justify,
                style=column.style,
                no_wrap=column.no_wrap,
                overflow="fold" if column.fold else "ellipsis",
            )
        for row in self.rows:
            table.add_row(*row)
        return table

    def to_plain(self) -> str:
        """Aligned columns of plain text, never wrapped (a reader of piped output wants whole values)."""
        header = [tuple(column.header for column in self.columns)] if self.show_header else []
        # A cell may span several lines: each row is as tall as its tallest cell.
        lines: list[tuple[str, ...]] = []
        for row in [*header, *self.rows]:
            split = [cell.splitlines() or [""] for cell in row]
            height = max((len(cell) for cell in split), default=1)
            lines += [tuple(cell[i] if i < len(cell) else "" for cell in split) for i in range(height)]
        widths = [max((len(line[i]) for line in lines), default=0) for i in range(len(self.columns))]
        out = [self.title] if self.title else []
        for index, line in enumerate(lines):
            out.append(self._plain_line(line, widths))
            if self.show_header and index == 0:
                out.append(_PLAIN_GAP.join("-" * width for width in widths))
        return "\n".join(out) + "\n"

    def _plain_line(self, cells: tuple[str, ...], widths: list[int]) -> str:
        padded = [
            cell.rjust(width) if column.justify == "right" else cell.ljust(width)
            for cell, width, column in zip(cells, widths, self.columns, strict=True)
        ]
        return _PLAIN_GAP.join(padded).rstrip()


class Output:
    """Prints text and tables on stdout: rich when it is installed (and ``use_rich`` allows it), plain otherwise."""

    def __init__(self, use_rich: bool | None = None) -> None:
        self.rich = HAVE_RICH if use_rich is None else use_rich and HAVE_RICH
        self._console: Console | None = None
        self._printed = False
        if self.rich:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=False)

    @property
    def console(self) -> Console | None:
        """The rich console, for live displays; ``None`` without rich."""
        return self._console

    def text(self, value: object) -> str:
        """Literal text (a file's content, a path): escaped where rich would read it as markup."""
        if not self.rich:
            return str(value)
        from rich.markup import escape

        return escape(str(value))

    def styled(self, value: object, style: str) -> str:
        """Literal text shown in a rich style (``"red"``, ``"bold green"``...); just the text without rich."""
        return f"[{style}]{self.text(value)}[/]" if self.rich else str(value)

    def print(self, item: str | Table = "") -> None:
        """A line made of :meth:`text` and :meth:`styled` pieces, or a table."""
        if self._console is not None:
            self._console.print(item.to_rich() if isinstance(item, Table) else item)
        elif isinstance(item, Table):
            # Without borders, a blank line is what tells one titled table from the one before.
            sys.stdout.write(("\n" if self._printed and item.title else "") + item.to_plain())
        else:
            sys.stdout.write(f"{item}\n")
        self._printed = True
