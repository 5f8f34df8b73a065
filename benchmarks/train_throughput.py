"""Training throughput (images/s) of u2seg's trainer against a plain PyTorch loop written the way
the official U-2-Net ``u2net_train.py`` is, in the same process, interleaved.

    .venv/bin/python benchmarks/train_throughput.py                  # u2netp, batch 12, 320 → 288
    .venv/bin/python benchmarks/train_throughput.py --model u2net --rounds 3
    .venv/bin/python benchmarks/train_throughput.py --crop 96 --size 112 --batch 4 --steps 2 --warmup 1 --rounds 1

The variants share the recipe (batch 12, resize to 320×320, random 288×288 crop, horizontal flip,
divide by the image's max then ImageNet mean/std, Adam 1e-3 / (0.9, 0.999) / 1e-8, the sum of
seven BCE terms), the network class (``u2seg.models.create_model``, same seed) and the data (one
synthetic set made with ``make_synthetic_dataset``); only the training machinery differs:

``plain``
    ``u2net_train.py``'s loop: a ``Dataset`` reading with ``skimage.io.imread`` and doing
    ``RescaleT(320)`` (``skimage.transform.resize``, float64), ``RandomCrop(288)`` and
    ``ToTensorLab(flag=0)`` in numpy as ``data_loader.py`` does, plus a horizontal flip with
    p = 0.5; ``DataLoader(shuffle=True)``; ``optimizer.zero_grad()``, forward, ``sigmoid`` on the
    seven outputs and ``muti_bce_loss_fusion`` (``nn.BCELoss`` each, summed), ``backward``,
    ``step``, and the script's two ``loss.item()`` per step (its per-step ``print`` is left out).
``u2seg loader``
    ``u2seg.train.train(config, progress=False)`` with ``data.cache: off``: FolderPairs +
    ``official_train`` (Pillow Lanczos resize, albumentations crop/flip, float32) per sample in a
    DataLoader, the trainer's seeded step sampler, ``DeepSupervisionLoss`` (BCE on logits: the same
    value as sigmoid + BCELoss), ``eval_interval: 0``, ``save_interval: 0``, no validation set.
``u2seg cached``
    the same with ``data.cache: memory`` (the default ``auto`` for small sets): every image decoded
    and resized once before training, then each step's crop, flip and normalisation done on the
    whole batch with torch ops (on the CPU here; on the GPU when training on one).
``u2seg compiled`` (not run by default: compiling U²-Net-P takes minutes on a small CPU)
    the cached path with ``compile: default`` (torch.compile); ``first step`` shows the
    compilation.
``u2seg bf16`` (not run by default)
    the cached path with ``precision: bf16`` (autocast) and ``channels_last: true``, the fast
    settings on CPUs with AVX512-BF16 or AMX.

The data paths alone (``--data-batches``, before the rounds): images/s each one delivers with no
network, the official-style DataLoader, u2seg's DataLoader path and its cached path, each timed
over ``--data-batches`` batches after one untimed batch (``set-up``: workers starting, and for the
cache decoding every image once). ``--rounds 0`` measures only these.

Timing, the same way for every variant: a global ``torch.optim`` step post-hook stamps the end of
every ``optimizer.step()``. A round runs ``warmup + steps`` iterations; its rate is
``steps × batch / (stamp[warmup + steps] − stamp[warmup])``, so model construction, dataset checks,
DataLoader start-up, the first ``warmup`` steps and whatever the trainer does after the last step
(final checkpoint, ``best/``) are outside the window; everything between two steps (loading the
next batch, forward, backward, update, the loop's bookkeeping) is inside. The u2seg rounds also
report the trainer's own clock (``train_seconds`` in ``metrics.jsonl``, ``log_interval: 1``,
which counts loading and updates but not its log writes) over the same steps, as a cross-check.
Rounds alternate the variants (plain, u2seg loader, u2seg cached, plain, …) so that the machine's
drift hits all of them alike; the table gives each variant's median round, its range, and the
ratio of medians against ``plain``.

The synthetic set holds ``(warmup + steps) × batch`` images (at least 48) unless ``--images``
says otherwise, so that no variant crosses an epoch boundary inside a round: the official loop
restarts its DataLoader workers at every epoch (one epoch of DUTS-TR is 880 steps), whereas
u2seg's sampler runs through epochs without restarting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io, transform  # what data_loader.py uses; imported before DataLoader workers fork
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "u2seg-loader", "u2seg-cached", "u2seg-compiled", "u2seg-bf16")
DEFAULT_VARIANTS = ("plain", "u2seg-loader", "u2seg-cached")
LABELS = {"plain": "plain PyTorch loop (as u2net_train.py)",
          "u2seg-loader": "u2seg trainer, fp32, DataLoader path (data.cache: off)",
          "u2seg-cached": "u2seg trainer, fp32, decode-once cache + batch augmentation (data.cache: memory)",
          "u2seg-compiled": "u2seg trainer, fp32, cached path, compile: default (torch.compile)",
          "u2seg-bf16": "u2seg trainer, bf16 + channels_last, cached path"}


# --------------------------------------------------------------------------------------------
# the official loop (after U-2-Net's data_loader.py and u2net_train.py)


class SalObjDataset(torch.utils.data.Dataset):
    """``SalObjDataset`` with ``RescaleT(size)``, ``RandomCrop(crop)`` (+ a horizontal flip) and
    ``ToTensorLab(flag=0)`` as the official data_loader.py does them, in float64 numpy."""

    def __init__(self, images: list[Path], labels: list[Path], size: int, crop: int, flip_p: float = 0.5):
        self.images, self.labels = images, labels
        self.size, self.crop, self.flip_p = size, crop, flip_p

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict:
        image = io.imread(self.images[idx])
        label_3 = io.imread(self.labels[idx])
        label = label_3[:, :, 0] if label_3.ndim == 3 else label_3
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        label = label[:, :, np.newaxis]
        # RescaleT
        image = transform.resize(image, (self.size, self.size), mode="constant")
        label = transform.resize(label, (self.size, self.size), mode="constant", order=0, preserve_range=True)
        # RandomCrop (np.random.randint's high is exclusive, as in the official code)
        h, w = image.shape[:2]
        top = np.random.randint(0, h - self.crop) if h > self.crop else 0
        left = np.random.randint(0, w - self.crop) if w > self.crop else 0
        image = image[top: top + self.crop, left: left + self.crop]
        label = label[top: top + self.crop, left: left + self.crop]
        # the horizontal flip the official script gets from its offline-flipped "im_aug" copies
        if random.random() < self.flip_p:
            image, label = image[:, ::-1], label[:, ::-1]
        # ToTensorLab(flag=0)
        label = np.ascontiguousarray(label, dtype=np.float64)  # from_numpy refuses flipped views
        if np.max(label) >= 1e-6:
            label = label / np.max(label)
        tmp = np.zeros((image.shape[0], image.shape[1], 3))
        image = image / np.max(image)
        if image.shape[2] == 1:
            for c in range(3):
                tmp[:, :, c] = (image[:, :, 0] - 0.485) / 0.229
        else:
            tmp[:, :, 0] = (image[:, :, 0] - 0.485) / 0.229
            tmp[:, :, 1] = (image[:, :, 1] - 0.456) / 0.224
            tmp[:, :, 2] = (image[:, :, 2] - 0.406) / 0.225
        return {"image": torch.from_numpy(tmp.transpose((2, 0, 1))),
                "label": torch.from_numpy(label.transpose((2, 0, 1)))}


def muti_bce_loss_fusion(bce: nn.Module, d: tuple[torch.Tensor, ...], labels: torch.Tensor):
    losses = [bce(x, labels) for x in d]
    return losses[0], sum(losses[1:], losses[0])


def run_plain(args: argparse.Namespace, data: Path, seed: int) -> dict:
    from u2seg.models import create_model

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    net = create_model(args.model)
    net.train()
    images = sorted((data / "images").glob("*.jpg"))
    labels = [data / "masks" / f"{p.stem}.png" for p in images]
    dataset = SalObjDataset(images, labels, args.size, args.crop)
    # drop_last (not in the official script) keeps every step at the full batch
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         drop_last=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0)
    bce = nn.BCELoss(reduction="mean")
    total = args.warmup + args.steps
    stamps = _Stamps()
    ite, running_loss, running_tar_loss = 0, 0.0, 0.0
    try:
        while ite < total:
            for batch in loader:
                inputs = batch["image"].type(torch.FloatTensor)
                labels_v = batch["label"].type(torch.FloatTensor)
                optimizer.zero_grad()
                d = net(inputs)
                loss2, loss = muti_bce_loss_fusion(bce, tuple(torch.sigmoid(x) for x in d), labels_v)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                running_tar_loss += loss2.item()
                del d, loss2, loss
                ite += 1
                if ite == total:
                    break
    finally:
        times = stamps.close()
    return {"rate": _rate(times, args), "step_seconds": _deltas(times), "loss": running_loss / max(ite, 1)}


# --------------------------------------------------------------------------------------------
# u2seg's trainer


def run_u2seg(args: argparse.Namespace, data: Path, seed: int, out: Path, bf16: bool, cache: str,
              compile: str = "off") -> dict:
    from u2seg.train import train

    config = {
        "model": {"name": args.model, "num_classes": 1, "pretrained": False},
        "data": {"train": {"format": "folder", "root": str(data),
                           "transform": {"name": "official_train", "size": args.size, "crop": args.crop,
                                         "flip_p": 0.5}},
                 "cache": cache},
        "batch_size": args.batch,
        "iterations": args.warmup + args.steps,
        "optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "loss": {"weights": [1] * 7},
        "precision": "bf16" if bf16 else "fp32",
        "channels_last": bf16,
        "compile": compile,
        "device": "cpu",
        "seed": seed,
        "workers": args.workers,
        "log_interval": 1,
        "eval_interval": 0,
        "save_interval": 0,
        "preview_interval": 0,
        "keep_checkpoints": 1,
        "output_dir": str(out),
    }
    stamps = _Stamps()
    try:
        result = train(config, progress=False)
    finally:
        times = stamps.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    seconds = {r["step"]: r["train_seconds"] for r in rows if r.get("kind") == "train"}
    own = seconds[args.warmup + args.steps] - seconds[args.warmup]
    shutil.rmtree(out, ignore_errors=True)  # the final checkpoint and best/: not needed
    return {"rate": _rate(times, args), "own_rate": args.steps * args.batch / own if own > 0 else float("nan"),
            "first_step_s": seconds[1], "step_seconds": _deltas(times), "loss": result["loss"]}


# --------------------------------------------------------------------------------------------
# the data paths alone


def run_data_only(args: argparse.Namespace, data: Path) -> list[dict]:
    """Images/s each data path delivers with no network: the official loop's DataLoader, u2seg's
    DataLoader path (``data.cache: off``) and its cached path (decode once, then crop, flip and
    normalise whole batches with torch ops), each for ``--data-batches`` batches after one untimed
    batch. ``setup_seconds``: building the path (for the cache: decoding every image once)."""
    from u2seg.data import FolderPairs, official_train
    from u2seg.train.batches import BatchSource
    from u2seg.train.sampler import StepSampler

    count = args.data_batches

    def timed(make) -> tuple[float, float]:
        start = time.perf_counter()
        batches = iter(make())
        next(batches)  # start-up (workers, first decode) is set-up, not throughput
        setup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(count):
            batch = next(batches)
        assert batch["image"].shape[0] == args.batch
        return args.batch * count / (time.perf_counter() - start), setup

    def plain():
        images = sorted((data / "images").glob("*.jpg"))
        dataset = SalObjDataset(images, [data / "masks" / f"{p.stem}.png" for p in images], args.size, args.crop)
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=(count + 1) * args.batch)
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers)

    def u2seg(cache: str):
        transform = official_train(args.size, args.crop)
        dataset = FolderPairs(data, transform=transform)
        source = BatchSource(dataset, torch.device("cpu"), workers=args.workers, cache=cache)
        source.prepare([transform])  # the cache is decoded here (and timed as set-up)
        return source.batches(transform, StepSampler(len(dataset), args.batch, args.seed, 0, count + 1))

    rows = []
    for key, label, make in (("plain", "official-style DataLoader (skimage, float64)", plain),
                             ("loader", "u2seg DataLoader path (data.cache: off)", lambda: u2seg("off")),
                             ("cached", "u2seg cached path (data.cache: memory), batch ops on the CPU",
                              lambda: u2seg("memory"))):
        rate, setup = timed(make)
        rows.append({"path": key, "label": label, "images_per_s": rate, "setup_seconds": setup})
        print(f"data path {key}: {rate:.1f} img/s (set-up {setup:.1f} s)", flush=True)
    for row in rows:
        row["ratio_vs_plain"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


# --------------------------------------------------------------------------------------------
# timing


class _Stamps:
    def __init__(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.times: list[float] = []
        self.handle = register_optimizer_step_post_hook(lambda *_: self.times.append(time.perf_counter()))

    def close(self) -> list[float]:
        self.handle.remove()
        return self.times


def _deltas(times: list[float]) -> list[float]:
    """Seconds between consecutive step ends (the first step's own time is not known)."""
    return [round(b - a, 4) for a, b in zip(times, times[1:])]


def _rate(times: list[float], args: argparse.Namespace) -> float:
    if len(times) != args.warmup + args.steps:
        raise RuntimeError(f"expected {args.warmup + args.steps} optimizer steps, saw {len(times)}")
    return args.steps * args.batch / (times[-1] - times[args.warmup - 1])


# --------------------------------------------------------------------------------------------
# report


def machine() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"cpu": model, "cores": os.cpu_count(), "isa": [f for f in wanted if f in flags],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}


def command_line() -> str:
    python = sys.executable
    try:
        rel = os.path.relpath(python)
        python = rel if not rel.startswith("..") else python
    except ValueError:
        pass
    return shlex.join([python, *sys.argv])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["u2netp", "u2net"], default="u2netp")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--size", type=int, default=320, help="resize to SIZE×SIZE (RescaleT)")
    parser.add_argument("--crop", type=int, default=288, help="random CROP×CROP crop (RandomCrop)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round (≥ 1)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of all variants (about 8 min each for u2netp at 288 px on 2 cores)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (u2net_train.py: 1)")
    parser.add_argument("--images", type=int, default=0,
                        help="synthetic images (default: enough for one epoch per round, at least 48)")
    parser.add_argument("--image-size", type=int, default=400, help="side of the synthetic images")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--data-batches", type=int, default=20,
                        help="batches per data path in the data-only comparison (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.rounds < 0 or args.batch < 1:
        parser.error("--warmup, --steps and --batch must be ≥ 1, --rounds ≥ 0 (0: the data paths alone)")
    if not 1 <= args.crop <= args.size:
        parser.error("--crop must lie within 1 … --size")
    count = args.images or max(48, (args.warmup + args.steps) * args.batch)
    if count < args.batch:
        parser.error("--images must be at least --batch")

    torch.set_num_threads(args.threads)
    info = machine()
    command = command_line()
    print(f"machine: {info['cpu']}, {info['cores']} cores ({' '.join(info['isa'])}), torch {info['torch']}, "
          f"{info['torch_threads']} threads", flush=True)
    print(f"command: {command}", flush=True)
    if "u2seg-bf16" in args.variants and not {"avx512_bf16", "amx_bf16"} & set(info["isa"]):
        print("note: this CPU has neither AVX512-BF16 nor AMX; bf16 autocast will be slow here", flush=True)

    from u2seg.data.synth import make_synthetic_dataset

    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory(prefix="u2seg-train-throughput-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        data = make_synthetic_dataset(tmp / "data", count=count, size=args.image_size, seed=args.seed)
        print(f"{count} synthetic images of {args.image_size} px in {time.perf_counter() - start:.1f} s; "
              f"{args.model}, batch {args.batch}, {args.size} → {args.crop}, {args.warmup} + {args.steps} steps "
              f"× {args.rounds} rounds, {args.workers} loader worker(s)", flush=True)
        data_rows = run_data_only(args, data) if args.data_batches else []
        for r in range(args.rounds):
            for variant in args.variants:
                if variant == "plain":
                    res = run_plain(args, data, args.seed)
                else:
                    res = run_u2seg(args, data, args.seed, tmp / f"run-{variant}-{r}", bf16=variant == "u2seg-bf16",
                                    cache="off" if variant == "u2seg-loader" else "memory",
                                    compile="default" if variant == "u2seg-compiled" else "off")
                runs[variant].append(res)
            print(f"round {r + 1}: " + ", ".join(f"{v} {runs[v][-1]['rate']:.2f} img/s" for v in args.variants),
                  flush=True)

    base = statistics.median(x["rate"] for x in runs["plain"]) if "plain" in runs and args.rounds else None
    rows = []
    for variant in args.variants if args.rounds else ():
        rates = [x["rate"] for x in runs[variant]]
        median = statistics.median(rates)
        own = [x["own_rate"] for x in runs[variant] if "own_rate" in x]
        rows.append({"variant": variant, "label": LABELS[variant], "images_per_s": median,
                     "min": min(rates), "max": max(rates), "per_round": rates,
                     "ratio_vs_plain": median / base if base else None,
                     "trainer_own_images_per_s": statistics.median(own) if own else None,
                     "first_step_s": [x["first_step_s"] for x in runs[variant] if "first_step_s" in x],
                     "step_seconds": [x["step_seconds"] for x in runs[variant]],
                     "final_loss": [x["loss"] for x in runs[variant]]})

    if rows:
        print("\n| variant | images/s (median) | min–max | × plain | trainer's own clock (img/s) | first step (s) |")
        print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['ratio_vs_plain']:.2f}" if row["ratio_vs_plain"] is not None else "—"
        own = f"{row['trainer_own_images_per_s']:.2f}" if row["trainer_own_images_per_s"] is not None else "—"
        first = ", ".join(f"{t:.1f}" for t in row["first_step_s"]) or "—"
        print(f"| {row['label']} | {row['images_per_s']:.2f} | {row['min']:.2f}–{row['max']:.2f} | {ratio} | {own} "
              f"| {first} |")
    if data_rows:
        print("\ndata path alone (no network): batches of the recipe delivered to the training loop")
        print("| data path | images/s | × plain | set-up (s) |")
        print("|---|---:|---:|---:|")
        for row in data_rows:
            print(f"| {row['label']} | {row['images_per_s']:.1f} | {row['ratio_vs_plain']:.2f} | "
                  f"{row['setup_seconds']:.1f} |")
    print(f"\nmachine: {info['cpu']}; {info['cores']} cores; ISA {', '.join(info['isa']) or '—'}; "
          f"torch {info['torch']} ({info['torch_threads']} threads); Python {info['python']}")
    print(f"command: {command}")

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["images"] = count
    report = {"date": time.strftime("%Y-%m-%d"), "command": command, "machine": info, "settings": settings,
              "rows": rows, "data_only": data_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
