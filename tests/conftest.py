"""Shared test settings: where the read-only reference material lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Reference material (ECS data, API specs, EQL conformance suites) sits beside the repository in
# `../shared`; tests that need it skip with a reason when it is absent.
SHARED_DIR = Path(os.environ.get("DAC_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout under test."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference folder; skips the test when it is not present."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"reference folder {SHARED_DIR} is absent")
    return SHARED_DIR
