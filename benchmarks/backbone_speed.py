"""The written-out EfficientNet-Lite against timm's, same weights: forward and training speed.

    python benchmarks/backbone_speed.py --arch efficientnet_lite0 --size 224 --out DIR
    python benchmarks/backbone_speed.py --device cuda --arch efficientnet_lite2 --size 300

Both networks get the same state dict and run as the learner runs them: the body with
concatenated pooling, on a CPU in channels_last and float32, on CUDA in the default layout
under bfloat16 autocast. "forward" is the frozen body over a batch (inference mode); "train"
is one step of the whole network as ``fine_tune`` trains it (the fused conv -> BatchNorm view,
BatchNorm statistics frozen, a linear head, AdamW). Rounds alternate between the two networks;
the table gives the median images/s over rounds and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import publish  # noqa: E402
from threeline.vision.fused import fused  # noqa: E402
from threeline.vision.model import Body  # noqa: E402
from threeline.vision.weights import REGISTRY, create_backbone  # noqa: E402


def networks(arch: str, device: torch.device) -> dict[str, Body]:
    import timm

    ours, _, _ = create_backbone(arch)
    theirs = timm.create_model(REGISTRY[arch].timm_name, num_classes=0, global_pool="")
    theirs.load_state_dict(ours.state_dict())
    return {"threeline": Body(ours).to(device).eval(), "timm": Body(theirs).to(device).eval()}


def rate(step, batch: int, steps: int, sync) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="efficientnet_lite0", choices=sorted(REGISTRY))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--machine", default=f"{platform.machine()}-cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    layout = torch.contiguous_format if cuda else torch.channels_last
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=layout)
    y = torch.randint(0, 2, (args.batch,), device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (
        lambda: torch.autocast("cpu", enabled=False))
    rates: dict[str, dict[str, list[float]]] = {}
    steps = {}
    for name, body in networks(args.arch, device).items():
        body.to(memory_format=layout)
        head = nn.Linear(body.out_features, 2).to(device)
        view = fused(body, x[:2]) or body
        net = nn.Sequential(view, head)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-5)

        def forward(body=body):
            with torch.inference_mode(), autocast():
                body(x)

        def train(net=net, opt=opt):
            with autocast():
                loss = nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        forward(), train()  # warm-up (kernel choice, allocator)
        steps[name] = {"forward": forward, "train": train}
        rates[name] = {"forward": [], "train": []}
    for _ in range(args.rounds):
        for name in steps:
            for kind, step in steps[name].items():
                rates[name][kind].append(rate(step, args.batch, args.steps, sync))
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rates.items()}
    command = "python benchmarks/backbone_speed.py " + " ".join(argv or sys.argv[1:])
    lines = [f"# EfficientNet-Lite: threeline's against timm's ({args.machine}, "
             f"{datetime.date.today()})", "", f"`{command}`: {args.arch} at {args.size} px, batch "
             f"{args.batch}, {args.rounds} rounds of {args.steps} steps, device {args.device}, "
             f"torch {torch.__version__}.", "",
             "| images/s (median) | threeline | timm | threeline / timm |",
             "| --- | --- | --- | --- |"]
    for kind in ("forward", "train"):
        a, b = med["threeline"][kind], med["timm"][kind]
        lines.append(f"| {kind} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    name = f"backbone_speed-{args.arch}-{args.machine}-{datetime.date.today()}.md"
    publish(lines, args.out, name)


if __name__ == "__main__":
    main()
