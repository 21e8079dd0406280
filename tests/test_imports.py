"""`import threeline` stays light: the core only, no plotting, no application, no heavy library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["matplotlib", "pandas", "pyarrow", "lightgbm", "tokenizers", "transformers", "timm",
         "starlette", "uvicorn", "threeline.vision", "threeline.tabular", "threeline.text",
         "threeline.collab", "threeline.serve"]


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    return set(out.split())


def test_import_threeline_loads_no_application_and_no_heavy_library():
    loaded = _loaded_after("import threeline\nthreeline.Learner")
    assert "threeline.learner" in loaded and "torch" in loaded  # the check itself works
    assert not [name for name in HEAVY if name in loaded]
    assert "torch" not in _loaded_after("import threeline")  # the command line parses first


def test_an_application_loads_when_first_used():
    loaded = _loaded_after("import threeline\nthreeline.ImageData")
    assert "threeline.vision" in loaded and "timm" not in loaded and "torchvision" not in loaded
    assert "matplotlib" not in loaded and "pandas" not in loaded
