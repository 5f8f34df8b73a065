"""The Ray engine against the local engine on the same 60 photos (issue 13's goal: overhead ≤ 25 %).

Each round runs, as whole processes and in alternating order, on this machine's CPUs:

- ``local``: ``u2seg remove -m u2netp PHOTOS -o OUT`` (the local engine);
- ``ray, cluster up``: the same with ``--engine ray --ray-address auto`` against a Ray started
  beforehand (``ray start --head --num-cpus N``) that has run one small job (untimed): the
  engine's own overhead, as on a cluster that serves jobs;
- ``ray, own start``: ``--engine ray`` alone, which starts (and stops) a local Ray: what one
  command on one machine costs.

Every output of each Ray run is compared with the local run's (byte-identical expected). One JSON
line per figure; the medians over rounds at the end.

    .venv/bin/python benchmarks/ray_engine.py --rounds 3    # --count 60 --cpus 2 --model u2netp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    from u2seg.infer.bench import generated_photos

    work = Path(tempfile.mkdtemp(prefix="u2seg-ray-bench-"))
    photos = work / "photos"
    generated_photos(photos, count=args.count)
    env = {**os.environ, "RAY_ENABLE_USAGE_STATS": "0"}

    def remove(inputs: Path) -> list[str]:
        return [str(BIN / "u2seg"), "remove", str(inputs), "-m", args.model, "--batch-size", str(args.batch_size)]

    modes = {
        "local": [],
        "ray, cluster up": ["--engine", "ray", "--ray-address", "auto"],
        "ray, own start": ["--engine", "ray"],
    }
    warm_up = work / "warm-up"
    generated_photos(warm_up, count=2)

    def start_cluster() -> None:
        # A running cluster has served jobs before: its first Ray Data job also creates Ray Data's
        # own detached actors (statistics, autoscaling, actor locations), a one-time cost of a few
        # seconds that a small job pays here, untimed.
        subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", str(args.cpus), "--include-dashboard=false",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True)
        shutil.rmtree(work / "warm-up-out", ignore_errors=True)
        _timed(remove(warm_up) + ["-o", str(work / "warm-up-out"), *modes["ray, cluster up"]], env)

    start_cluster()
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for round_ in range(args.rounds):
            order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
            outputs = {}
            for mode in order:
                if mode == "ray, own start":  # its own local Ray: the started one must not be found
                    subprocess.run([str(BIN / "ray"), "stop"], env=env, capture_output=True)
                out = work / f"out-{round_}-{mode.replace(' ', '').replace(',', '-')}"
                seconds[mode].append(_timed(remove(photos) + ["-o", str(out), *modes[mode]], env))
                outputs[mode] = _outputs(out)
                shutil.rmtree(out)
                if mode == "ray, own start":
                    start_cluster()
                print(json.dumps({"round": round_, "mode": mode, "seconds": round(seconds[mode][-1], 2),
                                  "images_per_s": round(args.count / seconds[mode][-1], 3)}), flush=True)
            for mode in modes:
                if mode != "local":
                    same = outputs[mode] == outputs["local"]
                    print(json.dumps({"round": round_, "mode": mode, "identical_to_local": same,
                                      "files": len(outputs[mode])}), flush=True)
    finally:
        subprocess.run([str(BIN / "ray"), "stop"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    local = statistics.median(seconds["local"])
    for mode, values in seconds.items():
        median = statistics.median(values)
        print(json.dumps({"mode": mode, "median_seconds": round(median, 2),
                          "images_per_s": round(args.count / median, 3),
                          "overhead_vs_local": round(median / local - 1, 3)}), flush=True)


if __name__ == "__main__":
    main()
