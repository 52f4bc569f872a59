"""Shared fixtures. The library under test is the one $DSA_INDEXER_LIBRARY names (ctest sets it to the
freshly built one); without it the package's own search applies."""

import pytest

import dsa_indexer
from dsa_indexer import _api


@pytest.fixture
def ctx():
    """A CPU context, closed after the test."""
    with dsa_indexer.Context() as context:
        yield context


@pytest.fixture
def no_c_calls(monkeypatch):
    """Makes any status-returning call into the library fail the test: for checks that must happen in
    Python, before the library is asked anything."""
    def refuse(name, *args):
        raise AssertionError(f"{name} was called, but the arguments should have been rejected before it")
    monkeypatch.setattr(_api, "call", refuse)
