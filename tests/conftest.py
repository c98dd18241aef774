"""Shared fixtures for the shiftstack_ccd tests."""

import hashlib
import sys
import urllib.parse
from pathlib import Path

import pytest
import requests

# Let the tests run from a source checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftstack_ccd.datasets import get_data_path  # noqa: E402


@pytest.fixture(scope="session")  # a pure function: module-scoped fixtures may use it too
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


class FakeTransport:
    """Stands in for the network: records every HTTP request and answers it."""

    def __init__(self):
        self.urls = []
        self.answer = None  # str, or callable(params) -> str
        self.status = 200
        self.error = None

    def params(self, i=-1):
        query = urllib.parse.urlsplit(self.urls[i]).query
        return {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}

    def send(self, adapter, request, **kwargs):
        self.urls.append(request.url)
        if self.error is not None:
            raise self.error
        text = self.answer(self.params()) if callable(self.answer) else self.answer
        resp = requests.Response()
        resp.status_code = self.status
        resp._content = text.encode()
        resp.url = request.url
        resp.request = request
        resp.encoding = "utf-8"
        resp.reason = "OK" if self.status == 200 else "Service Unavailable"
        return resp


@pytest.fixture
def transport(monkeypatch):
    """The network, mocked at the HTTP level: requests are recorded and answered."""
    fake = FakeTransport()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send",
                        lambda adapter, request, **kw: fake.send(adapter, request, **kw))
    return fake
