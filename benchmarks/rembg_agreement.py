#!/usr/bin/env python3
"""Do u2seg's masks agree with rembg's on the same weights (U²-Net-P and U²-Net)?

Runs ``u2seg remove -m MODEL --only-mask`` and the real rembg (in its own venv) over the same
images with the same ONNX file, then compares the two 8-bit masks pixel by pixel. rembg runs
``u2netp`` through its ``u2net_custom`` session and ``u2net`` through its own ``u2net`` session,
which finds u2seg's ``u2net.onnx`` in its model folder (``U2NET_HOME``) instead of downloading it:
the file's md5 is checked against the one rembg expects of its download. Differences are in /255
units (one grey level = 1). u2seg rounds where rembg truncates, so a small systematic gap is
expected.

    bash benchmarks/setup_rembg.sh                      # once: creates .venv-rembg
    .venv/bin/python benchmarks/rembg_agreement.py --json benchmarks/results/rembg_agreement.json
    .venv/bin/python benchmarks/rembg_agreement.py --model u2net     # one model (default: both)

Exits 1 when an image's mean |Δ| exceeds ``--max-mean``, 2 when a step fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# onnxruntime otherwise contacts a telemetry host on import (and waits when offline); the
# subprocesses get it through _env().
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_DISAGREE, EXIT_FAILED = 0, 1, 2

# Runs inside .venv-rembg: reads {"session", "model_path", "tasks": [[src, dst], ...]} as JSON on stdin and
# prints one JSON line (versions, timings) after RESULT_MARK. Bytes in, PNG bytes out is the path
# rembg's own CLI takes (``rembg i`` / ``rembg p``), so decoding is rembg's, not ours.
RESULT_MARK = "REMBG-RESULT "
REMBG_SNIPPET = r"""
import json, os, platform, sys, time
from importlib.metadata import version
t0 = time.perf_counter()
from rembg import new_session, remove  # first import compiles numba code (~1 min)
import_s = time.perf_counter() - t0
job = json.load(sys.stdin)
if job["session"] == "u2net_custom":
    session = new_session("u2net_custom", model_path=job["model_path"])
    model_file = job["model_path"]
else:  # rembg's own session: it takes the file found in its model folder (no download)
    session = new_session(job["session"])
    model_file = type(session).download_models()
t1 = time.perf_counter()
for src, dst in job["tasks"]:
    with open(src, "rb") as f:
        mask_png = remove(f.read(), session=session, only_mask=True)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "wb") as f:
        f.write(mask_png)
run_s = time.perf_counter() - t1
info = {name: version(name) for name in ("rembg", "onnxruntime", "numpy", "pillow")}
info.update(python=platform.python_version(), providers=session.inner_session.get_providers(),
            import_s=round(import_s, 2), run_s=round(run_s, 2), model_file=os.path.realpath(model_file))
print("REMBG-RESULT " + json.dumps(info), flush=True)
"""


@dataclass
class Row:
    """One image's comparison; differences in /255 units."""

    image: str
    mode: str  # as Pillow opens the file (RGB, L, RGBA, ...)
    size: tuple[int, int]  # width, height
    mean_abs: float
    max_abs: int
    mean_signed: float  # u2seg - rembg: rembg truncates, u2seg rounds, so about +0.5 expected
    share_over_1: float  # fraction of pixels with |Δ| > 1


# ------------------------------------------------------------------------------------ images

# scikit-image's bundled photos (no download). cat is an alias of chelsea in recent releases:
# duplicates are skipped by content below rather than by name, so an older skimage still counts.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "png", "coffee": "jpg", "chelsea": "jpg", "cat": "jpg", "rocket": "jpg",
    "camera": "png", "coins": "png", "hubble_deep_field": "jpg", "immunohistochemistry": "png",
    "retina": "jpg", "motorcycle_left": "jpg", "logo": "png",
}


def _load_skimage(name: str) -> np.ndarray | None:
    """A bundled skimage image, or None if it is absent or would need a pooch download."""
    import skimage.data

    fetchers = sys.modules.get("skimage.data._fetchers")
    if fetchers is not None and hasattr(fetchers, "_image_fetcher"):
        # Without a fetcher skimage raises instead of downloading: the benchmark stays offline
        # and deterministic even where pooch happens to be installed.
        fetchers._image_fetcher = None
    try:
        if name == "motorcycle_left":
            return skimage.data.stereo_motorcycle()[0]
        loader = getattr(skimage.data, name, None)
        return None if loader is None else np.asarray(loader())
    except (ImportError, OSError, KeyError, ValueError):  # no pooch, ConnectionError, bad file
        return None


def build_images(folder: Path) -> list[str]:
    """Write the test images into ``folder``; return notes on what was skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    seen: dict[bytes, str] = {}
    for name, ext in SKIMAGE_PHOTOS.items():
        pixels = _load_skimage(name)
        if pixels is None:
            notes.append(f"skimage.data.{name}: not available offline, skipped")
            continue
        digest = hashlib.sha256(pixels.tobytes()).digest()
        if digest in seen:
            notes.append(f"skimage.data.{name}: same pixels as {seen[digest]}, skipped")
            continue
        seen[digest] = name
        image = Image.fromarray(pixels)
        if ext == "jpg":
            image.convert("RGB").save(folder / f"{name}.jpg", quality=95)
        else:
            image.save(folder / f"{name}.png")

    astronaut = _load_skimage("astronaut")
    chelsea = _load_skimage("chelsea")
    if astronaut is not None:
        # Larger than the network input in both directions, with a different aspect ratio: the
        # mask's resize back to 1600x1200 is where float and uint8 Lanczos differ most.
        big = Image.fromarray(astronaut).resize((1600, 1200), Image.Resampling.LANCZOS)
        big.save(folder / "astronaut_1600x1200.jpg", quality=90)  # Pillow writes no EXIF here
    if chelsea is not None:
        # Straight (unpremultiplied) RGBA: an elliptical vignette, fully transparent corners with
        # the colours still stored under them. Both tools feed the network the RGB channels.
        h, w = chelsea.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
        alpha = np.clip((1.2 - r) / 0.4, 0.0, 1.0) * 255
        rgba = np.dstack([chelsea, np.rint(alpha).astype(np.uint8)])
        Image.fromarray(rgba, "RGBA").save(folder / "chelsea_rgba.png")
    return notes


# ------------------------------------------------------------------------------------ tools

def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _env() -> dict[str, str]:
    return {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}


# How rembg runs each model: (session, md5 rembg expects of its own download or None).
# u2netp: the custom session on u2seg's file (the README's original comparison); u2net: rembg's
# own ``u2net`` session, handed u2seg's file where it would have downloaded its own.
REMBG_SESSIONS: dict[str, tuple[str, str | None]] = {
    "u2netp": ("u2net_custom", None),
    "u2net": ("u2net", "60024c5c889badc19c04ad937298a77b"),
}
MODELS = tuple(REMBG_SESSIONS)


def run_u2seg(images: Path, outdir: Path, model: str = "u2netp") -> tuple[list[str], float]:
    """``u2seg remove -m MODEL --only-mask`` over the folder; returns (argv, seconds)."""
    exe = Path(sys.executable).with_name("u2seg")  # the console script of this very venv
    argv = [str(exe), "remove", str(images), "-o", str(outdir), "-m", model, "--only-mask", "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(argv, check=False, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"u2seg exited {done.returncode}:\n{done.stderr[-4000:]}")
    return argv, seconds


def u2seg_onnx(model: str = "u2netp") -> Path:
    """The ONNX file u2seg converted its cached ``model`` weights from, checked by sha256."""
    from u2seg.weights import get_weights
    from u2seg.weights.cache import u2seg_home, weights_dir

    source = get_weights(model).sources[0]
    path = u2seg_home() / "sources" / source.filename
    if not path.is_file():  # the converted cache can outlive its source file: fetch it again
        source.fetch(path)
    sha = _sha256(path)
    converted_from = json.loads((weights_dir(model) / "config.json").read_text())["source_sha256"]
    if sha != source.sha256 or sha != converted_from:
        raise RuntimeError(f"{path}: sha256 {sha} is neither the registry's {source.sha256} nor "
                           f"the one the cached weights were converted from ({converted_from})")
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_rembg(python: Path, onnx: Path, tasks: list[tuple[Path, Path]],
              home: Path, model: str = "u2netp") -> tuple[dict, float]:
    """rembg's ``remove(only_mask=True)`` over ``tasks`` in its own venv; returns (info, seconds)."""
    session, md5 = REMBG_SESSIONS[model]
    if md5 is not None and _md5(onnx) != md5:
        raise RuntimeError(f"{onnx}: md5 {_md5(onnx)} is not {md5}, the file rembg's {session!r} session "
                           f"downloads; it would not be the same model")
    # rembg loads a custom model only from inside its home folder (U2NET_HOME), and looks for its
    # own models there (<home>/<name>.onnx) before downloading: a link there makes onnxruntime
    # open u2seg's own file, byte for byte, without copying it.
    home.mkdir(parents=True, exist_ok=True)
    link = home / (onnx.name if md5 is None else f"{session}.onnx")
    link.unlink(missing_ok=True)
    try:
        link.symlink_to(onnx)
    except OSError:  # no symlinks (some Windows setups): a checked copy is the same bytes
        link.write_bytes(onnx.read_bytes())
    job = {"session": session, "model_path": str(link), "tasks": [[str(s), str(d)] for s, d in tasks]}
    env = {**_env(), "U2NET_HOME": str(home)}
    env.pop("MODEL_CHECKSUM_DISABLED", None)
    start = time.perf_counter()
    done = subprocess.run([str(python), "-c", REMBG_SNIPPET], input=json.dumps(job), env=env,
                          check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"rembg exited {done.returncode}:\n{done.stderr[-4000:]}")
    info = json.loads(lines[-1][len(RESULT_MARK):])
    if Path(info["model_file"]) not in (onnx.resolve(), link.resolve()):
        raise RuntimeError(f"rembg's {session!r} session opened {info['model_file']}, not {onnx}")
    return info, seconds


# ------------------------------------------------------------------------------------ compare

def compare(name: str, source: Path, ours: Path, theirs: Path) -> Row:
    with Image.open(source) as im:
        # Both tools apply the EXIF orientation, so masks have the upright size.
        mode, size = im.mode, (ImageOps.exif_transpose(im) or im).size
    a = np.asarray(Image.open(ours).convert("L"), dtype=np.int16)
    b = np.asarray(Image.open(theirs).convert("L"), dtype=np.int16)
    if a.shape != b.shape or a.shape != (size[1], size[0]):
        raise RuntimeError(f"{name}: mask sizes differ: image {size}, u2seg {a.shape[::-1]}, "
                           f"rembg {b.shape[::-1]}")
    diff = a - b
    absolute = np.abs(diff)
    return Row(image=name, mode=mode, size=size, mean_abs=float(absolute.mean()),
               max_abs=int(absolute.max()), mean_signed=float(diff.mean()),
               share_over_1=float((absolute > 1).mean()))


def markdown_table(rows: list[Row]) -> str:
    # "|" inside a cell must be escaped in Markdown tables.
    header = ("| image | mode | size | mean \\|Δ\\| | max \\|Δ\\| | mean Δ (u2seg − rembg) "
              "| px with \\|Δ\\| > 1 |")
    lines = [header, "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.image} | {r.mode} | {r.size[0]}×{r.size[1]} | {r.mean_abs:.3f} | "
                     f"{r.max_abs} | {r.mean_signed:+.3f} | {100 * r.share_over_1:.2f} % |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=[*MODELS, "both"], default="both",
                   help="u2netp, u2net or both (default both)")
    p.add_argument("--images", type=Path, help="compare on this folder (searched recursively) "
                                               "instead of the built-in scikit-image set")
    p.add_argument("--max-mean", type=float, default=2.0,
                   help="fail if any image's mean |Δ| exceeds this, in /255 units (default 2.0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the results as JSON")
    p.add_argument("--rembg-venv", type=Path, default=ROOT / ".venv-rembg",
                   help="venv with rembg (default .venv-rembg; see benchmarks/setup_rembg.sh)")
    p.add_argument("--workdir", type=Path, help="keep images and masks here (default: a temp dir)")
    return p.parse_args(argv)


def compare_model(model: str, images: Path, work: Path, rembg_python: Path) -> dict:
    """Both tools over ``images`` with ``model``; the rows, commands and timings."""
    # Pair outputs exactly as u2seg names them (sub-folders kept, <stem>.png).
    from u2seg.infer.files import plan_outputs

    u2seg_dir, rembg_dir = work / f"masks-u2seg-{model}", work / f"masks-rembg-{model}"
    plan = plan_outputs([str(images)], u2seg_dir, overwrite=True)
    if plan.conflicts or not plan.tasks:
        raise RuntimeError("; ".join(plan.conflicts) or f"no images in {images}")
    pairs = [(t.source, t.output, rembg_dir / t.output.relative_to(u2seg_dir)) for t in plan.tasks]

    print(f"u2seg -m {model}: {len(pairs)} images ...", file=sys.stderr)
    u2seg_argv, u2seg_s = run_u2seg(images, u2seg_dir, model)
    onnx = u2seg_onnx(model)  # after the run, which fetches the weights if needed
    session = REMBG_SESSIONS[model][0]
    print(f"rembg {session}: ... (its first import ever compiles numba code: about a minute)", file=sys.stderr)
    rembg_info, rembg_s = run_rembg(rembg_python, onnx, [(s, d) for s, _, d in pairs],
                                    work / "rembg-home" / model, model)
    rows = [compare(str(src.relative_to(images)), src, ours, theirs) for src, ours, theirs in pairs]
    if session == "u2net_custom":
        how = (f"new_session(\"u2net_custom\", model_path=<U2NET_HOME>/{onnx.name} -> {onnx})")
    else:
        how = (f"new_session(\"{session}\"), which opens <U2NET_HOME>/{session}.onnx -> {onnx} "
               f"(md5 {REMBG_SESSIONS[model][1]}, as rembg's download)")
    commands = {
        "u2seg command": shlex.join(u2seg_argv),
        "rembg command": (f"U2NET_HOME=<tmp> {rembg_python} -c '<snippet>': {how}; "
                          f"remove(file bytes, session=..., only_mask=True) -> PNG"),
        "weights": f"{onnx} (sha256 {_sha256(onnx)})",
    }
    timings = {"u2seg_s": round(u2seg_s, 2), "rembg_s": round(rembg_s, 2),
               "rembg_import_s": rembg_info["import_s"], "rembg_inference_s": rembg_info["run_s"]}
    return {"model": model, "rembg_session": session, "rows": rows, "commands": commands,
            "timings": timings, "rembg_info": rembg_info}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rembg_python = args.rembg_venv / "bin" / "python"
    if not rembg_python.is_file():
        print(f"error: {rembg_python} not found; run: bash benchmarks/setup_rembg.sh", file=sys.stderr)
        return EXIT_FAILED
    if args.images is not None and not args.images.is_dir():
        print(f"error: {args.images}: not a folder", file=sys.stderr)
        return EXIT_FAILED
    models = list(MODELS) if args.model == "both" else [args.model]

    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="rembg-agreement-") as tmp:
        work = args.workdir.resolve() if args.workdir else Path(tmp)
        images = args.images.resolve() if args.images else work / "images"
        notes = [] if args.images else build_images(images)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        try:
            for model in models:
                runs.append(compare_model(model, images, work, rembg_python))
        except (RuntimeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    import onnxruntime
    import torch

    rembg_info = runs[0]["rembg_info"]
    versions = {
        "u2seg": _package_version("u2seg"), "torch": torch.__version__,
        "onnxruntime (u2seg venv)": onnxruntime.__version__, "numpy (u2seg venv)": np.__version__,
        "pillow (u2seg venv)": _package_version("pillow"),
        "python (u2seg venv)": platform.python_version(),
        "u2seg device": "cuda" if torch.cuda.is_available() else "cpu",
        "rembg": rembg_info["rembg"], "onnxruntime (rembg venv)": rembg_info["onnxruntime"],
        "numpy (rembg venv)": rembg_info["numpy"], "pillow (rembg venv)": rembg_info["pillow"],
        "python (rembg venv)": rembg_info["python"],
        "rembg providers": ", ".join(rembg_info["providers"]),
        "scikit-image": _package_version("scikit-image"), "machine": platform.platform(),
    }
    total_s = time.perf_counter() - started

    passed = True
    for run in runs:
        worst = max(run["rows"], key=lambda r: r.mean_abs)
        run["worst"], run["passed"] = worst, worst.mean_abs <= args.max_mean
        passed = passed and run["passed"]
        t = run["timings"]
        print(f"\n## {run['model']} (rembg session {run['rembg_session']})\n")
        print(markdown_table(run["rows"]))
        print(f"\nworst mean |Δ|: {worst.mean_abs:.3f}/255 ({worst.image}); threshold {args.max_mean}/255: "
              f"{'pass' if run['passed'] else 'FAIL'}")
        print("\n" + "\n".join(f"- {k}: {v}" for k, v in run["commands"].items()))
        print(f"- time: u2seg {t['u2seg_s']:.1f} s (incl. start-up), rembg {t['rembg_s']:.1f} s (import "
              f"{t['rembg_import_s']:.1f} s, inference {t['rembg_inference_s']:.1f} s)")
    print("\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()))
    print(f"- total time {total_s:.1f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "models": {r["model"]: {"rows": [asdict(row) for row in r["rows"]], "worst_mean_abs": r["worst"].mean_abs,
                                    "worst_image": r["worst"].image, "passed": r["passed"],
                                    "rembg_session": r["rembg_session"], "commands": r["commands"],
                                    "timings": r["timings"]} for r in runs},
            "max_mean": args.max_mean, "passed": passed, "versions": versions,
            "total_s": round(total_s, 2), "notes": notes,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return EXIT_OK if passed else EXIT_DISAGREE


if __name__ == "__main__":
    sys.exit(main())
