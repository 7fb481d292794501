"""The README stays true: its configuration table names every setting the code reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.kernel.config import GatewaySettings, ServiceSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("settings_class", [ServiceSettings, GatewaySettings])
def test_every_setting_is_in_the_configuration_table(settings_class):
    missing = [f"COCREATE_{field.name.upper()}" for field in dataclasses.fields(settings_class)
               if not field.metadata.get("internal") and f"`COCREATE_{field.name.upper()}`" not in README]
    assert missing == []


def test_quick_start_holds_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "\nrun: venv" in makefile and "\ntest: venv" in makefile
