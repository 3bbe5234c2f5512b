"""The report as one document model: a title and a list of blocks, rendered to Markdown and to
HTML by the same walk, so that the two say the same things in the same order."""

import html
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    """`header` names every column, the row labels' first; each row is (label, [values])."""

    header: list
    rows: list


@dataclass(frozen=True)
class Bullets:
    items: list


@dataclass(frozen=True)
class Image:
    name: str
    path: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def section(self, heading, note, table):
        """A titled table with its note; left out when the table has no rows."""
        if table.rows:
            self.blocks += [Heading(heading), Paragraph(note), table]

    def texts(self):
        """Every piece of text the document holds, for comparing renderings."""
        found = [self.title]
        for block in self.blocks:
            if isinstance(block, (Heading, Paragraph)):
                found.append(block.text)
            elif isinstance(block, Bullets):
                found += block.items
            elif isinstance(block, Table):
                found += [*block.header, *(cell for label, values in block.rows for cell in (label, *values))]
            elif isinstance(block, Image):
                found += [block.name, block.path]
        return [text for text in found if text]


def markdown_block(block):
    if isinstance(block, Heading):
        return [f"## {block.text}"]
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Image):
        return [f"![{block.name}]({block.path})"]
    lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
    return lines + ["| " + " | ".join([label, *values]) + " |" for label, values in block.rows]


def to_markdown(document):
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        lines += [*markdown_block(block), ""]
    return "\n".join(lines)


def html_block(block):
    escape = html.escape
    if isinstance(block, Heading):
        return f"<h2>{escape(block.text)}</h2>"
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Image):
        return f'<p><img src="{escape(block.path)}" alt="{escape(block.name)}"></p>'
    cells = "".join(f"<th>{escape(name)}</th>" for name in block.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(value)}</td>" for value in [label, *values]) + "</tr>"
        for label, values in block.rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


STYLE = (
    "body{font-family:sans-serif;max-width:1200px}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
    "img{max-width:100%}"
)


def to_html(document):
    title = html.escape(document.title)
    body = "".join(html_block(block) for block in document.blocks)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
        f"</head><body><h1>{title}</h1>{body}</body></html>\n"
    )
