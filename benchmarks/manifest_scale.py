"""What the driver's own work costs per image, for the 100-million-image story (README, Ray).

Times, on this machine, the parts of a folder job that one process does whatever the cluster:
listing the inputs and planning outputs (``plan_outputs`` over a folder of N empty files), writing
the manifest (``started`` then ``done`` records) and reading it back to decide a rerun
(``Manifest(...)`` + ``decide``), with the manifest's bytes per image. One JSON line per figure.

    .venv/bin/python benchmarks/manifest_scale.py --files 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from u2seg.infer.files import plan_outputs
from u2seg.infer.manifest import MANIFEST_NAME, Manifest
from u2seg.infer.records import ImageRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="u2seg-manifest-scale-"))
    try:
        source, out = work / "in", work / "out"
        for i in range(args.files):  # 100 folders of files, as a catalogue would be sharded
            folder = source / f"{i % 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img{i:08d}.jpg").write_bytes(b"x" * 100)
        n = args.files

        start = time.perf_counter()
        plan = plan_outputs([str(source)], out, overwrite=True)
        listed = time.perf_counter() - start
        _say("list and plan", n, listed)

        manifest = Manifest(out / MANIFEST_NAME, "settings")
        manifest.open()
        start = time.perf_counter()
        manifest.claim(plan.tasks)  # the Ray driver's "started" records, in one write
        _say("claim every output (started, one write)", n, time.perf_counter() - start)
        start = time.perf_counter()
        for task in plan.tasks:
            manifest.write(ImageRecord(
                input=str(task.source), output=str(task.output), size=[1600, 1200], model="u2net", score=0.91,
                confidence={"score": 0.91, "softness": 0.04, "foreground": 0.55, "border": 0.3, "flip_disagreement": None},
                seconds={"decode": 0.04, "preprocess": 0.03, "network": 0.48, "postprocess": 0.03, "refine": 0.05,
                         "encode": 0.11, "write": 0.006}, input_bytes=100, input_mtime_ns=1, input_sha256="0" * 64))
        manifest.close()
        _say("record each image done (a flushed line each)", n, time.perf_counter() - start)
        size = (out / MANIFEST_NAME).stat().st_size
        print(json.dumps({"figure": "manifest bytes per image", "value": round(size / n)}), flush=True)

        start = time.perf_counter()
        again = Manifest(out / MANIFEST_NAME, "settings")
        read = time.perf_counter() - start
        _say("read the manifest", n, read)
        (out / MANIFEST_NAME).rename(work / "kept")  # decide() stats outputs: none exist, all run
        start = time.perf_counter()
        again.decide(plan.tasks)
        _say("decide a rerun", n, time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _say(figure: str, n: int, seconds: float) -> None:
    print(json.dumps({"figure": figure, "images": n, "seconds": round(seconds, 3),
                      "us_per_image": round(1e6 * seconds / n, 1),
                      "hours_for_100M": round(seconds / n * 1e8 / 3600, 2)}), flush=True)


if __name__ == "__main__":
    main()
