"""A table of text cells, written once and shown as Markdown (reports, registry descriptions, the demo's
summary) or as HTML (through the templates, which escape every cell)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
# Autoescape everywhere: every cell and name comes from user input or from files a user wrote.
environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""

    def markdown(self) -> list[str]:
        lines = [self.caption] if self.caption else []
        lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return lines + ["| " + " | ".join(row) + " |" for row in self.rows]


def render(template: str, **context) -> str:
    return environment.get_template(template).render(**context)
