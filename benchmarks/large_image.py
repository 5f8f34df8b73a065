"""Peak memory and time of `u2seg remove -m u2netp` on one 6000×4000 photo (goal: under 1.5 GB peak RSS).

Each configuration runs in a fresh process whose peak resident set size the kernel reports
(``getrusage(RUSAGE_CHILDREN)``), so start-up, model and image buffers are all counted.

    .venv/bin/python benchmarks/large_image.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from skimage import data

CONFIGS = {
    "cutout, lanczos": [],
    "cutout, fast resize": ["--resample", "fast"],
    "mask, fast resize": ["--resample", "fast", "--only-mask"],
    "cutout, bf16, fast resize": ["--resample", "fast", "--precision", "bf16"],
}


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a child process; run each in its own wrapper process so
    RUSAGE_CHILDREN holds that child alone."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], check=True, capture_output=True, text=True)
    seconds, kib = out.stdout.split()
    return float(seconds), int(kib) / 1024


def main() -> int:
    u2seg = str(Path(sys.executable).with_name("u2seg"))
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "big.jpg"
        Image.fromarray(data.astronaut()).resize((6000, 4000), Image.Resampling.BICUBIC).save(photo, quality=90)
        subprocess.run([u2seg, "remove", "-m", "u2netp", str(photo), "-o", str(Path(tmp) / "warm"), "--overwrite"], check=True,
                       capture_output=True)  # caches (exports) built outside the measurement
        print(f"6000×4000 JPEG ({photo.stat().st_size / 1e6:.1f} MB), {os.cpu_count()} cores, "
              f"{time.strftime('%Y-%m-%d')}\n")
        print("| configuration | seconds | peak RSS (MiB) |\n|---|---:|---:|")
        for name, extra in CONFIGS.items():
            seconds, rss = peak_rss_of([u2seg, "remove", "-m", "u2netp", str(photo), "-o", str(Path(tmp) / "out"),
                                        "--overwrite", *extra])
            print(f"| {name} | {seconds:.2f} | {rss:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
