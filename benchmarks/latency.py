"""Single-image latency at 320×320 for u2net and u2netp, per backend and precision, against the
model's FLOP count (as a fraction of this CPU's peak).

    .venv/bin/python benchmarks/latency.py [--models u2netp u2net] [--repeats 10]

u2netp uses the pretrained weights; u2net uses random weights (latency does not depend on them;
int8 calibration then runs on those). Peak FLOP/s assumes one fused multiply-add pipe pair of
256 bits per core (Zen 4 runs AVX-512 as two 256-bit halves): 32 fp32 FLOP/cycle/core; bf16 dot
products double that and int8 VNNI doubles it again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from u2seg.errors import U2SegError
from u2seg.infer.backends import create_backend

COMBOS = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
          ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
OPS_PER_CYCLE = {"fp32": 32, "bf16": 64, "int8": 128}


def conv_flops(model: torch.nn.Module, size: int = 320) -> float:
    """2 × multiply-accumulates of every conv (the bulk of U²-Net's work) for one image."""
    total = 0

    def hook(module: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return float(total)


def cpu_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return max(mhz) / 1000
    except (OSError, ValueError):
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    from u2seg import create_model
    from u2seg.weights import load_network

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["u2netp", "u2net"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    cores, ghz = os.cpu_count() or 1, cpu_ghz()
    print(f"{cores} cores at {ghz:.2f} GHz (/proc/cpuinfo), {time.strftime('%Y-%m-%d')}\n")
    print("| model | GFLOP | backend | precision | ms (median) | GFLOP/s | % of peak |")
    print("|---|---:|---|---|---:|---:|---:|")
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320), dtype=np.float32)
    for name in args.models:
        model = load_network(name) if name == "u2netp" else create_model(name)
        flops = conv_flops(model)
        for backend, precision in COMBOS:
            try:
                engine = create_backend(model, backend=backend, precision=precision)
            except U2SegError as exc:
                print(f"| {name} | {flops / 1e9:.1f} | {backend} | {precision} | n/a: {exc} | | |")
                continue
            for _ in range(2):
                engine.run(x)
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                engine.run(x)
                samples.append(time.perf_counter() - start)
            seconds = statistics.median(samples)
            peak = cores * ghz * 1e9 * OPS_PER_CYCLE[precision]
            print(f"| {name} | {flops / 1e9:.1f} | {backend} | {precision} | {seconds * 1000:.0f} | "
                  f"{flops / seconds / 1e9:.0f} | {100 * flops / seconds / peak:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
