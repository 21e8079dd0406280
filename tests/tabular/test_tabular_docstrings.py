"""Every example in the tabular package's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import threeline.tabular

MODULES = sorted(m.name for m in pkgutil.iter_modules(threeline.tabular.__path__))


def test_every_module_is_checked():
    assert {"columns", "preprocess", "data", "model", "learner", "gbdt"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"threeline.tabular.{name}")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
