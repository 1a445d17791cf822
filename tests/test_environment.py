"""environment.yml (the conda route) must ask for what pyproject.toml asks for."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name, spec = match.groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    specs = dict(_split(r) for r in requirements)
    specs["python"] = project["requires-python"].replace(" ", "")
    return specs


def _environment_requirements() -> dict[str, str]:
    specs = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        entry = re.match(r"^\s+-\s+(\S.*)$", line)
        if not entry or entry.group(1).startswith(("-e", "pip:")) or entry.group(1).rstrip(":") == "pip":
            continue
        name, spec = _split(entry.group(1))
        if name in ("pytorch", "conda-forge") and not spec:
            continue  # channel names
        specs[CONDA_NAMES.get(name, name)] = spec
    return specs


def test_environment_yml_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()
