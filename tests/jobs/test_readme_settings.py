"""The README's settings table is a promise: every setting appears with its real default, and no row
names a setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.settings import Settings

ROW = re.compile(r"^\| `LORAMERGE_(?P<name>[A-Z0-9_]+)` \| `(?P<default>[^`]*)` \|", re.MULTILINE)


def _shown(value) -> str:
    if value is None:
        return "(unset)"
    if value == [] or value == {}:
        return "(empty)"
    return str(value)


def test_readme_settings_table_matches_the_settings_class():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {m["name"].lower(): m["default"] for m in ROW.finditer(readme)}
    fields = Settings.model_fields
    assert set(rows) == set(fields), f"missing from README: {set(fields) - set(rows)}; unknown: {set(rows) - set(fields)}"
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "data_dir":
            default = "~/.local/share/loramerge"  # the user's, shown for the usual $HOME
        assert rows[name] == _shown(default), f"LORAMERGE_{name.upper()}: README says {rows[name]!r}, the code {default!r}"
