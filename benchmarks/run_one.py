"""Run one benchmark in this process and write its figures as JSON.

    python benchmarks/run_one.py SPEC.json RESULT.json

``compare.py`` starts one such process per run, so no framework's threads, memory or caches
carry over into another's figures. Imports are timed apart from the run itself; CUDA is
initialised before the clock starts, the same way for every framework.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from dataclasses import asdict

from common import Clock, Selection, Spec, peak_memory_mib, reset_peak_memory

MODULES = {"threeline": "threeline_run", "fastai": "fastai_run", "torch": "torch_tutorial_run"}


def main(spec_path: str, result_path: str) -> None:
    with open(spec_path) as handle:
        spec = Spec(**json.load(handle))
    selection = Selection.load(spec.selection)
    before = time.perf_counter()
    module = importlib.import_module(MODULES[spec.framework])
    import_s = time.perf_counter() - before

    import timm
    import torch

    torch.manual_seed(spec.seed)
    device_name = platform.processor() or platform.machine()
    if spec.device.startswith("cuda"):
        torch.zeros(1, device=spec.device)  # CUDA context, off the clock
        device_name = torch.cuda.get_device_name(torch.device(spec.device))
    reset_peak_memory(spec.device)
    clock = Clock(spec.device)
    result = module.run(spec, selection, clock)
    peak_kind, peak_mib = clock.peak or peak_memory_mib(spec.device)
    fit_s = clock.between("fit_start", "fit_end")
    result.update(
        spec=asdict(spec),
        import_s=import_s,
        setup_s=clock.between("start", "fit_start"),
        fit_s=fit_s,
        total_s=clock.between("start", "fit_end"),
        tta_s=clock.between("tta_start", "tta_end") if "tta_start" in clock.marks else None,
        images_per_s=result["n_train"] * result["epochs_run"] / fit_s,
        peak_kind=peak_kind,
        peak_mib=peak_mib,
        torch_version=torch.__version__,
        timm_version=timm.__version__,
        threads=torch.get_num_threads(),
        device_name=device_name,
        python=sys.version.split()[0],
    )
    with open(result_path, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
