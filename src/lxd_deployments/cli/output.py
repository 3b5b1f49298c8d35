"""Output formats as lxc prints them: bordered tables, borderless compact tables,
headerless CSV, compact JSON, YAML."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

FORMATS = ("table", "compact", "csv", "json", "yaml")
DEFAULT_FORMAT = "table"
# lxc shows certificate fingerprints shortened to 12 characters in tables.
SHORT_FINGERPRINT = 12


@dataclass(frozen=True)
class Column:
    """One table/CSV column: its header and how to get the cell from an API object."""

    header: str
    cell: Callable[[dict[str, Any]], Any]


def field_cell(name: str) -> Callable[[dict[str, Any]], Any]:
    """A cell that shows one field of the object."""
    return lambda obj: obj.get(name)


def count_cell(name: str) -> Callable[[dict[str, Any]], Any]:
    """A cell that shows how many items a list or map field holds (lxc's USED BY)."""
    return lambda obj: len(obj.get(name) or ())


def short_cell(name: str, length: int = SHORT_FINGERPRINT) -> Callable[[dict[str, Any]], Any]:
    """A cell that shows the start of a long identifier (fingerprints)."""
    return lambda obj: str(obj.get(name) or "")[:length]


def render_list(fmt: str, objects: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Render a `list` command's result; json and yaml carry the full objects, as in lxc."""
    if fmt == "json":
        return json.dumps(list(objects), separators=(",", ":")) + "\n"
    if fmt == "yaml":
        return dump_yaml(list(objects))
    rows = sorted([cell_text(c.cell(obj)) for c in columns] for obj in objects)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "table":
        return render_table([c.header for c in columns], rows)
    if fmt == "compact":
        return render_compact([c.header for c in columns], rows)
    raise ValueError(f"Unknown output format {fmt!r}")


def cell_text(value: Any) -> str:
    """How a single value reads in a table cell or a `get`: YAML-ish scalars."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return dump_yaml(value).rstrip("\n")
    return str(value)


def render_csv(rows: Iterable[Sequence[str]]) -> str:
    """CSV without a header line, as `lxc ... --format csv` prints it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An ASCII table with a line between rows, like lxc's; cells may span several lines."""
    split_rows = [[cell.split("\n") for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in split_rows:
        for index, lines in enumerate(row):
            widths[index] = max(widths[index], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        padded = (f" {cell.ljust(width)} " for cell, width in zip(cells, widths, strict=True))
        return "|" + "|".join(padded) + "|"

    out = [rule, line([_centre(h, w) for h, w in zip(headers, widths, strict=True)]), rule]
    for row in split_rows:
        height = max((len(lines) for lines in row), default=1)
        for depth in range(height):
            out.append(line([lines[depth] if depth < len(lines) else "" for lines in row]))
        out.append(rule)
    return "\n".join(out) + "\n"


def render_compact(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """lxc's `--format compact`: the table's columns without borders or rules, a header
    line, then one line per row (a multi-line cell shows its first line)."""
    lines = [list(headers), *([cell.split("\n")[0] for cell in row] for row in rows)]
    widths = [max(len(line[index]) for line in lines) for index in range(len(headers))]
    return "".join(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        .rstrip() + "\n" for line in lines)


def _centre(text: str, width: int) -> str:
    """Centre a header, the odd space on the right as lxc's tablewriter does."""
    left = (width - len(text)) // 2
    return (" " * left + text).ljust(width)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (PEM certificates) as `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """YAML in the API's field order, block style, like `lxc ... show`."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
