"""Shared fixtures. The `slow` marker is registered in pyproject.toml ([tool.pytest.ini_options])."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def flowers_root() -> Path:
    """The real Flowers-102 from env FLOWERS_ROOT (the folder holding flowers-102/, as torchvision takes it).

    Unset skips the test; set to a folder without flowers-102/ fails it, so a CI typo is not a silent skip."""
    root = os.environ.get("FLOWERS_ROOT")
    if not root:
        pytest.skip("FLOWERS_ROOT is not set (the folder holding flowers-102/)")
    path = Path(root).expanduser().resolve()
    if not (path / "flowers-102" / "jpg").is_dir():
        pytest.fail(f"FLOWERS_ROOT={root} holds no flowers-102/jpg/")
    return path
