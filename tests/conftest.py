"""Shared fixtures: real demo photos, the shared datasets when present, a trained learner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from threeline import ImageData, Learner, demo_path

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory):
    """Keep converted weights and activations out of the user's cache during tests."""
    old = os.environ.get("THREELINE_CACHE")
    os.environ["THREELINE_CACHE"] = str(tmp_path_factory.mktemp("threeline-cache"))
    yield
    if old is None:
        os.environ.pop("THREELINE_CACHE", None)
    else:
        os.environ["THREELINE_CACHE"] = old


def shared_dataset(name: str) -> Path:
    """A dataset under ../shared/data: skipped when absent locally, a failure when CI=true."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = f"{path} is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have ../shared/data.")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def dogscats_demo() -> Path:
    return demo_path("dogscats")


@pytest.fixture(scope="session")
def hymenoptera_demo() -> Path:
    return demo_path("hymenoptera")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, dogscats_demo) -> Path:
    """The odd-file corpus of test_bad_inputs.py (odd formats, bad files, bad layouts), made
    from the demo photos once per test module."""
    from test_bad_inputs import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus"), dogscats_demo)


@pytest.fixture(scope="session")
def trained(dogscats_demo) -> Learner:
    """efficientnet_lite0 trained 3 epochs on cached activations of the demo dogs and cats.

    Shared by many tests: do not train it further or change its state in a test. On the CPU
    even where a GPU is present, since tests compare it with models loaded on the CPU.
    """
    data = ImageData.from_folder(dogscats_demo, size=224)  # lite0's own (small folders: 288)
    learn = Learner.pretrained("efficientnet_lite0", data, precompute=True, device="cpu",
                               progress=False)
    learn.fit(0.01, 3)
    return learn
