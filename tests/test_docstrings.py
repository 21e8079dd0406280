"""Every example in the package's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import threeline

MODULES = sorted(m.name for m in pkgutil.walk_packages(threeline.__path__, "threeline.")
                 if not m.name.startswith("threeline.serve.static"))


def test_every_module_is_checked():
    assert {"threeline.learner", "threeline.batches", "threeline.vision.data",
            "threeline.vision.decode", "threeline.losses"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
