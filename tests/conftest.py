"""Shared fixtures for the shiftstack_ccd tests."""

import hashlib
import sys
from pathlib import Path

import pytest

# Let the tests run from a source checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftstack_ccd.datasets import get_data_path  # noqa: E402


@pytest.fixture
def shared_data():
    """Return a function that finds real example data, skipping the test when it is absent."""
    def find(relative):
        try:
            return get_data_path(relative)
        except FileNotFoundError as exc:
            pytest.skip(f"real example data not available: {exc}")
    return find


@pytest.fixture
def digests():
    """Return a function giving the SHA-256 of each file, to prove inputs are untouched."""
    def digest(paths):
        return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    return digest
