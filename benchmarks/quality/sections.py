"""docs/benchmarks.md holds the encoder's report and, after it, one marked section per further model (the
decoder's). Each run rewrites its own part only: a model's section in place, between its two marker lines
(appended the first time); the encoder's report the whole file, carrying the sections of the old file over
at its end. Text edited by hand inside a section is overwritten by the next run of that model."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"^<!-- (\w+) section: [^\n]*\n(.*?)^<!-- end of \1 section -->\n?", re.M | re.S)


def _block(name: str, body: str) -> str:
    return (
        f"<!-- {name} section: written by python -m benchmarks.quality --model {name}, between these markers -->\n"
        f"{body.strip()}\n<!-- end of {name} section -->\n"
    )


def sections(text: str) -> dict[str, str]:
    """The body of each marked section of ``text``, by name."""
    return {m.group(1): m.group(2) for m in _SECTION.finditer(text)}


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` set to ``body``: in place if it has one, else appended."""
    for m in _SECTION.finditer(text):
        if m.group(1) == name:
            return text[: m.start()] + _block(name, body) + text[m.end() :]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + _block(name, body)


def write_section(path: Path, name: str, body: str) -> None:
    path.write_text(replace_section(path.read_text() if path.exists() else "", name, body))


def write_keeping_sections(path: Path, text: str) -> None:
    """Write ``text`` as the file, followed by every section of the old file that ``text`` lacks."""
    old = sections(path.read_text()) if path.exists() else {}
    for name, body in old.items():
        if name not in sections(text):
            text = replace_section(text, name, body)
    path.write_text(text)
