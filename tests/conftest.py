"""Test-wide settings."""

import pytest


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path, monkeypatch):
    """Every test runs with a temporary working directory, so nothing it writes
    (trial's ``mktemp()`` directories, big test files) lands in the checkout."""
    monkeypatch.chdir(tmp_path)
