"""How the server shares the CPU with its model: the model's thread count, and OpenMP threads
that sleep rather than spin while they wait (set before torch loads, in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from threeline.serve.model import ModelHost

CHECK = """
import os, sys
from threeline.serve.cli import passive_waits
import threeline.serve.app  # what serve() imports before the model thread loads torch
assert "torch" not in sys.modules, "the server imported torch before its OpenMP setting"
passive_waits()
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _policy(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_openmp_threads_wait_passively_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"
    assert _policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"  # an explicit choice wins


def test_model_threads_are_set_when_the_model_loads(trained, dogscats_demo, tmp_path):
    trained.save(tmp_path / "model")
    with pytest.raises(ValueError, match="threads must be a whole number"):
        ModelHost(tmp_path, device="cpu", threads=0)
    before = torch.get_num_threads()
    host = ModelHost(tmp_path, device="cpu", threads=1)
    try:
        host.start().result(timeout=300)
        assert host.state == "ready", host.error
        assert host.executor.submit(torch.get_num_threads).result() == 1  # the model's thread
        photo = sorted((dogscats_demo / "valid" / "dogs").glob("*.jpg"))[0]
        served = np.stack(host.predict_images([Image.open(photo).convert("RGB")]))
        np.testing.assert_allclose(served, trained.predict([photo]), atol=1e-4)
    finally:
        host.close()
        torch.set_num_threads(before)
