"""The README's configuration table is the settings model: no setting missing, none invented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from layer.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings_env_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        assert isinstance(field.validation_alias, AliasChoices)
        names.add(str(field.validation_alias.choices[0]))
    return names


def test_readme_configuration_table_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))
    assert documented == _settings_env_names()


def test_readme_gives_the_two_commands_in_order() -> None:
    text = README.read_text()
    assert "make dev" in text and "make test" in text
    assert (
        text.index("## Two commands")
        < text.index("## Configuration")
        < text.index("## Running against real turbopuffer and a real Kafka")
    )
