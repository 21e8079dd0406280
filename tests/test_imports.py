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


def _three_lines(demo, cache, before: str = "", after: str = "") -> list[str]:
    """The three lines (lite0 on the demo photos, cached activations, two epochs) in a new
    process: ``before`` runs first, ``after`` last; the words it printed."""
    code = (f"import sys, threading, torch\n{before}\nfrom threeline import ImageData, Learner\n"
            f"data = ImageData.from_folder({str(demo)!r}, size=96)\n"
            f"learn = Learner.pretrained('efficientnet_lite0', data, precompute=True, "
            f"progress=False, cache_dir={str(cache)!r})\nlearn.fit(0.01, 2)\n{after}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=True).stdout.split()


def test_the_three_lines_and_fine_tuning_import_neither_timm_torchvision_nor_dynamo(
        dogscats_demo, tmp_path):
    """The registered backbones are built by threeline.models.efficientnet_lite (on a CPU,
    where nvjpeg is not used, torchvision is not needed either), and threeline's optimizers
    skip torch.optim's compile guards, which import torch._dynamo (seconds per process)."""
    out = _three_lines(dogscats_demo, tmp_path, after=(
        "learn.unfreeze(); learn.fit(1e-4, 1); learn.fine_tune(1)\n"
        "print(learn.validate()['accuracy'], 'timm' in sys.modules, "
        "'torchvision' in sys.modules, 'torch._dynamo' in sys.modules)\n"
        "import torch._dynamo\nprint('torch._dynamo' in sys.modules)"))
    assert float(out[-5]) >= 0.9 and out[-4:] == ["False", "False", "False", "True"]


def test_the_installed_version_is_the_package_version():
    import importlib.metadata

    import threeline

    assert importlib.metadata.version("threeline") == threeline.__version__
