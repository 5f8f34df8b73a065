"""Throughput of `u2seg remove` against rembg on the same U²-Net-P weights, interleaved.

Both tools process the same folder of photos (by default 60 of 1.5 MP on average, up to a 4K
frame's pixels: scikit-image's photos resized, JPEG and PNG; `u2seg.infer.bench.generated_photos`)
into RGBA cutouts, as `rembg p` does. Each command is timed as a whole
process (start-up, model load and every file), in rounds that alternate the tools so that the
machine's drift hits all of them alike; the median round is reported. The cutouts' alpha channels
are the masks, compared against rembg's.

    bash benchmarks/setup_rembg.sh                  # rembg in .venv-rembg (once)
    .venv/bin/python benchmarks/throughput.py       # --rounds 3 --count 60 --json results.json

rembg runs through its Python API in a loop equal to `rembg p`'s (bytes in, `remove()`, PNG
bytes out); its CLI extra (gradio …) is not needed for that. Its first import compiles numba
code for about a minute, so a warm-up call runs before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rembg_agreement import ROOT, _load_skimage, build_images, u2seg_onnx  # noqa: E402

REMBG_LOOP = r"""
import json, os, sys, time
t0 = time.perf_counter()
from rembg import new_session, remove
job = json.load(sys.stdin)
session = new_session("u2net_custom", model_path=job["model_path"])
for src, dst in job["tasks"]:
    with open(src, "rb") as f:
        data = remove(f.read(), session=session)
    with open(dst, "wb") as f:
        f.write(data)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

# name → extra `u2seg remove -m u2netp` arguments
U2SEG_MODES = {
    "u2seg fp32": [],
    "u2seg fp32 fast-resize": ["--resample", "fast"],
    "u2seg bf16": ["--precision", "bf16"],
    "u2seg int8": ["--precision", "int8"],
    "u2seg int8 compression 1": ["--precision", "int8", "--compression", "1"],
}
DEFAULT_MODES = ["u2seg fp32", "u2seg bf16", "u2seg int8"]


def build_folder(folder: Path) -> list[Path]:
    """scikit-image's photos plus generated large JPEGs/PNGs: at least 24 files, mixed sizes."""
    build_images(folder)
    sizes = [(2400, 1600), (3000, 2000), (4000, 3000), (1920, 1080), (1280, 960), (800, 1200)]
    sources = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "immunohistochemistry"]
    for i, (name, size) in enumerate((n, s) for n in sources for s in sizes):
        pixels = _load_skimage(name)
        if pixels is None or len(list(folder.iterdir())) >= 26:
            continue
        image = Image.fromarray(pixels).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        image.save(folder / f"{name}_{size[0]}x{size[1]}.{'png' if i % 4 == 3 else 'jpg'}", quality=90)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if len(files) < 24:
        raise SystemExit(f"only {len(files)} images could be made; need 24")
    return files


def rembg_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `bash benchmarks/setup_rembg.sh` first")
    return python


def run_rembg(python: Path, onnx: Path, files: list[Path], out: Path, home: Path) -> float:
    home.mkdir(parents=True, exist_ok=True)
    link = home / onnx.name
    if not link.exists():
        link.symlink_to(onnx)  # rembg loads custom models only from inside U2NET_HOME
    out.mkdir(parents=True, exist_ok=True)
    job = {"model_path": str(link), "tasks": [[str(f), str(out / f"{f.stem}.png")] for f in files]}
    env = {**os.environ, "U2NET_HOME": str(home), "ORT_DISABLE_TELEMETRY": "1"}
    start = time.perf_counter()
    subprocess.run([str(python), "-c", REMBG_LOOP], input=json.dumps(job), env=env, text=True,
                   check=True, capture_output=True)
    return time.perf_counter() - start


def run_u2seg(folder: Path, out: Path, extra: list[str]) -> float:
    u2seg = Path(sys.executable).with_name("u2seg")
    start = time.perf_counter()
    subprocess.run([str(u2seg), "remove", "-m", "u2netp", str(folder), "-o", str(out), "--overwrite", *extra],
                   check=True, capture_output=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    return time.perf_counter() - start


def alpha_differences(ours: Path, theirs: Path, files: list[Path]) -> tuple[float, float, str]:
    """Mean and worst (per-image mean) |Δ| of the alpha channels, in 1/255."""
    means = {}
    for f in files:
        a = np.asarray(Image.open(ours / f"{f.stem}.png").getchannel("A"), dtype=np.int16)
        b = np.asarray(Image.open(theirs / f"{f.stem}.png").getchannel("A"), dtype=np.int16)
        means[f.name] = float(np.abs(a - b).mean())
    worst = max(means, key=means.get)
    return float(np.mean(list(means.values()))), means[worst], worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rembg-venv", type=Path, default=ROOT / ".venv-rembg")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--modes", nargs="*", default=DEFAULT_MODES, choices=list(U2SEG_MODES))
    parser.add_argument("--count", type=int, default=60, help="generated photos (default 60)")
    parser.add_argument("--megapixels", type=float, default=1.5, help="their mean size (default 1.5)")
    parser.add_argument("--legacy-set", action="store_true", help="the 26-image set of the first benchmarks")
    args = parser.parse_args(argv)

    python = rembg_python(args.rembg_venv)
    onnx = u2seg_onnx()
    with tempfile.TemporaryDirectory(prefix="u2seg-throughput-") as tmp:
        tmp = Path(tmp)
        if args.legacy_set:
            files = build_folder(tmp / "images")
        else:
            from u2seg.infer.bench import generated_photos

            files = generated_photos(tmp / "images", args.count, args.megapixels)
        pixels = sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files)
        print(f"{len(files)} images, {pixels / 1e6:.1f} Mpx in all, largest "
              f"{max(Image.open(f).size for f in files)}", flush=True)
        # Warm-ups: rembg's numba compile, u2seg's export/compile caches for each mode.
        run_rembg(python, onnx, files[:1], tmp / "warm-rembg", tmp / "u2net-home")
        modes = []
        for name in args.modes:
            try:
                run_u2seg(tmp / "images", tmp / "warm", U2SEG_MODES[name])
                modes.append(name)
            except subprocess.CalledProcessError as exc:  # e.g. bf16 on a CPU without bf16 instructions
                print(f"{name}: skipped ({exc.stderr.decode().strip().splitlines()[-1]})", flush=True)
        args.modes = modes
        times: dict[str, list[float]] = {"rembg": [], **{m: [] for m in args.modes}}
        for r in range(args.rounds):
            times["rembg"].append(run_rembg(python, onnx, files, tmp / "out-rembg", tmp / "u2net-home"))
            for name in args.modes:
                times[name].append(run_u2seg(tmp / "images", tmp / f"out-{name.replace(' ', '_')}", U2SEG_MODES[name]))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
        rembg_rate = len(files) / statistics.median(times["rembg"])
        rows = [{"mode": "rembg (u2net_custom, onnxruntime)", "images_per_s": rembg_rate, "ratio": 1.0}]
        for name in args.modes:
            rate = len(files) / statistics.median(times[name])
            mean, worst, worst_name = alpha_differences(tmp / f"out-{name.replace(' ', '_')}", tmp / "out-rembg", files)
            row = {"mode": name, "images_per_s": rate, "ratio": rate / rembg_rate, "mask_mean_diff": mean,
                   "mask_worst_image_diff": worst, "worst_image": worst_name}
            if name != "u2seg fp32" and "u2seg fp32" in args.modes:
                fp32_mean, fp32_worst, fp32_name = alpha_differences(
                    tmp / f"out-{name.replace(' ', '_')}", tmp / "out-u2seg_fp32", files)
                row.update(vs_fp32_mean_diff=fp32_mean, vs_fp32_worst_image_diff=fp32_worst, vs_fp32_worst_image=fp32_name)
            rows.append(row)

    print("\n| mode | images/s | × rembg | mask mean \\|Δ\\| vs rembg (/255) | worst image | vs u2seg fp32 (/255) |")
    print("|---|---:|---:|---:|---|---:|")
    for row in rows:
        extra = (f"{row['mask_mean_diff']:.2f} | {row['mask_worst_image_diff']:.2f} ({row['worst_image']})"
                 if "mask_mean_diff" in row else "— | —")
        vs = (f"{row['vs_fp32_mean_diff']:.2f} (worst {row['vs_fp32_worst_image_diff']:.2f})"
              if "vs_fp32_mean_diff" in row else "—")
        print(f"| {row['mode']} | {row['images_per_s']:.2f} | {row['ratio']:.2f} | {extra} | {vs} |")
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "images": len(files), "rounds": args.rounds, "times_s": times}
    print(f"\n{json.dumps(meta)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, **meta}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
