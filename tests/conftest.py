"""Shared test set-up: the netem plugin, root-only skips, and leak checks for kernel objects."""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["fabric.testing.pytest_netem"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces")
    for item in items:
        if "netns" in item.keywords and "netem" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fabric_name() -> str:
    """A fabric name no user's fabric will have."""
    return f"t{secrets.token_hex(3)}"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """Keep test fabrics' state out of /run/fabric, and remove whatever a test leaves."""
    from fabric.net import lifecycle

    monkeypatch.setattr(lifecycle, "STATE_ROOT", tmp_path / "state")
    yield tmp_path / "state"
    for st in lifecycle.list_states():
        lifecycle.remove_fabric(st)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """Write dedented YAML to a file under tmp_path and return its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "topo.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write
