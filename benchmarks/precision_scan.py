"""Which layers of U²-Net(-P) must stay fp32 under bf16/fp16 autocast: a layer-by-layer scan.

    U2SEG_HOME=.cache/u2seg-test .venv/bin/python benchmarks/precision_scan.py \
        [--model u2netp] [--weights PATH] [--images 10] [--sensitivity-images 3] [--no-check]

Prints one JSON line per figure (``--json FILE`` writes them to a file too); progress goes to
stderr. Error = |mask - fp32 mask| in 1/255 at the network's 320×320, after sigmoid and the
pipeline's per-image min-max stretch; per image its mean and max over pixels; over images,
``mean`` is the mean of the per-image means, ``worst`` the largest per-image mean and ``max`` the
largest pixel. Figures:

``setup``            torch, CPU capability, photos (scikit-image's; missing ones are skipped).
``autocast_ops``     the dtypes each aten op sees and returns under CPU autocast (this torch).
``emulation_check``  real CPU autocast against the emulation below, on one photo at 96×96.
``noise_floor``      fp32 with uniform ±0.5/255 noise added to the input (one 8-bit step):
                     how far masks move when nothing but the input's last bit changes.
``all_reduced``      (a) everything under bf16 / fp16 autocast.
``decomposition``    where the error comes from, without autocast: only conv weights+biases cast
                     to bf16 and back, only conv inputs, conv inputs+weights cast to fp16 and back
                     (the usual fp16 emulation), TF32 convs (what CUDA's fp32 does by default).
``sensitivity``      (b) each conv alone under bf16 autocast, every other conv kept fp32, on the
                     photos (a) found worst (2 by default); ranked.
``mechanism``        the conv whose outputs are sums of the largest terms relative to them
                     (``cancellation`` = rms(Σ|w·x| + |b|) / rms(out), per output channel): its
                     worst channel's dominant input (a constant when in_rms = in_mean), weight,
                     bias, how many channels cancel > 10×, and bf16/fp16's rounding steps there.
``keep``             (c) bf16 autocast with sets kept fp32: the top-k of (b) for k = 1, 2, 4, 8,
                     the heads (side1…side6, outconv), the last decoder stage (stage1d), both, the
                     minimal set found with each member dropped again, and the chosen set in fp16.
``summary``          the minimal set that reaches ``--target`` (2/255 mean), with its error.

Method. CPU bf16/fp16 kernels without AVX-512-bf16/AMX are reference loops (~150 s per 320×320
image on 2 cores), so the reduced runs are emulated: real ``torch.autocast`` decides every op's
dtype (tensors really are bf16/fp16), and a dispatch mode computes each op on those tensors in fp32
and rounds the result to the op's output dtype, which is what the kernels do (fp32 accumulation,
one rounding at the output; BatchNorm, upsampling and ``+`` in fp32 opmath). ``emulation_check``
measures the gap to the real kernels. Kept layers go through
:func:`u2seg.infer.mixed_precision.keep_in_fp32`, as in the backend.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from u2seg.infer.mixed_precision import keep_in_fp32

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left", "immunohistochemistry",
          "retina", "hubble_deep_field", "coins", "logo")
HEADS = ("side1", "side2", "side3", "side4", "side5", "side6", "outconv")
LAST_DECODER = ("stage1d",)
CHUNK = 5  # images per forward pass
aten = torch.ops.aten
_BN = {aten.batch_norm.default, aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default}
_CONV = {aten.conv2d.default, aten.convolution.default, aten._convolution.default}
_PASS = {aten._to_copy.default, aten.to.dtype, aten.copy_.default, aten.detach.default, aten.alias.default,
         aten.clone.default, aten.empty_like.default}


# ---------------------------------------------------------------------------------------- emulation
class EmulateKernels(TorchDispatchMode):
    """Under autocast: every op whose inputs include ``dtype`` tensors computes in fp32 and returns
    the dtype the real op would (``dtype`` unless an fp32 tensor promotes it; BatchNorm follows
    its input). ``log`` collects ``op: 'in dtypes -> out dtype'``."""

    def __init__(self, dtype: torch.dtype, log: dict | None = None) -> None:
        super().__init__()
        self.dtype, self.log = dtype, log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PASS:
            return func(*args, **kwargs)
        flat, spec = tree_flatten((args, kwargs))
        reduced = [isinstance(a, torch.Tensor) and a.dtype == self.dtype for a in flat]
        if not any(reduced):
            return func(*args, **kwargs)
        floats = [a.dtype for a in flat if isinstance(a, torch.Tensor) and a.is_floating_point()]
        out_dtype = args[0].dtype if func in _BN else (torch.float32 if torch.float32 in floats else self.dtype)
        if self.log is not None:
            self.log[str(func.overloadpacket)] = f"{'+'.join(sorted({_short(d) for d in floats}))} -> {_short(out_dtype)}"
        wide, wide_kwargs = tree_unflatten([a.float() if r else a for a, r in zip(flat, reduced)], spec)
        out = func(*wide, **wide_kwargs)
        out = tree_map(lambda t: t.to(out_dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)
        if func._schema.name.endswith("_"):  # in place (relu_): write back into the caller's tensor
            args[0].copy_(out)
            return args[0]
        return out


class RoundConvs(TorchDispatchMode):
    """Without autocast: round conv inputs / weights+biases / outputs with the given functions."""

    def __init__(self, inputs: Callable | None = None, weights: Callable | None = None,
                 outputs: Callable | None = None) -> None:
        super().__init__()
        self.inputs, self.weights, self.outputs = inputs, weights, outputs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _CONV:
            return func(*args, **kwargs)
        x, w, b, *rest = args
        if self.inputs:
            x = self.inputs(x)
        if self.weights:
            w, b = self.weights(w), (self.weights(b) if b is not None else None)
        out = func(x, w, b, *rest, **kwargs)
        return self.outputs(out) if self.outputs else out


def _cast(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t.to(dtype).float()


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 → TF32 (10 mantissa bits), round to nearest even, kept in an fp32 tensor."""
    i = t.contiguous().view(torch.int32)
    i = (i + 0xFFF + ((i >> 13) & 1)) & ~0x1FFF
    return i.view(torch.float32).reshape(t.shape)


def _short(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


# ------------------------------------------------------------------------------------- measuring
def masks(logits: torch.Tensor) -> torch.Tensor:
    """N×1×H×W logits → N×H×W masks: sigmoid, then each stretched to [0, 1] (the pipeline's)."""
    p = torch.sigmoid(logits.float())[:, 0]
    lo, hi = p.amin((1, 2), keepdim=True), p.amax((1, 2), keepdim=True)
    return (p - lo) / (hi - lo).clamp_min(1e-12)


def forward(model: torch.nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None,
            keep: Iterable[str] = (), mode: TorchDispatchMode | None = None, real: bool = False) -> torch.Tensor:
    """Fused logits d0 for ``x``: fp32, or autocast to ``dtype`` (emulated unless ``real``) with
    ``keep`` in fp32; ``mode`` wraps the pass (RoundConvs variants)."""
    keep = list(keep)
    if keep:
        model = keep_in_fp32(copy.deepcopy(model), keep)
    outs = []
    with torch.inference_mode():
        for chunk in x.split(CHUNK):
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                emulate = EmulateKernels(dtype) if dtype is not None and not real else None
                with emulate or _nothing(), mode or _nothing():
                    outs.append(model(chunk)[0].float())
    return torch.cat(outs)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def errors(candidate: torch.Tensor, reference: torch.Tensor, names: Sequence[str]) -> dict:
    e = (masks(candidate) - reference).abs() * 255
    means, maxes = e.mean((1, 2)).tolist(), e.amax((1, 2)).tolist()
    worst = int(np.argmax(means))
    return {"mean": round(float(np.mean(means)), 3), "worst": round(means[worst], 3), "worst_image": names[worst],
            "max": round(max(maxes), 1),
            "per_image": {n: [round(m, 3), round(x, 1)] for n, m, x in zip(names, means, maxes)}}


def conv_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def conv_macs(model: torch.nn.Module, size: tuple[int, int]) -> dict[str, int]:
    macs: dict[str, int] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(
        lambda m, i, o, n=n: macs.__setitem__(n, m.weight[0].numel() * o.numel())) for n in conv_names(model)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size[1], size[0]))
    for h in hooks:
        h.remove()
    return macs


def fp32_share(names: Iterable[str], macs: dict[str, int]) -> float:
    """Fraction of the network's conv MACs that the kept modules (and their children) hold."""
    names = list(names)
    kept = sum(v for k, v in macs.items() if any(k == n or k.startswith(n + ".") for n in names))
    return round(kept / sum(macs.values()), 4)


class PrefixCache:
    """Outputs of the top-level modules in call order (fp32): when only one conv is reduced,
    every top-level module called before the one holding it computes exactly what fp32 did, so
    the scan replays those outputs instead of recomputing them."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        self.order: list[str] = []
        self.outputs: list[dict[str, torch.Tensor]] = []
        for chunk in x.split(CHUNK):
            record: dict[str, torch.Tensor] = {}
            hooks = [m.register_forward_hook(lambda m, i, o, n=n, record=record: record.__setitem__(n, o))
                     for n, m in model.named_children()]
            first = not self.order
            if first:
                hooks += [m.register_forward_pre_hook(lambda m, i, n=n: self.order.append(n))
                          for n, m in model.named_children()]
            with torch.inference_mode():
                model(chunk)
            for h in hooks:
                h.remove()
            self.outputs.append(record)
        if len(set(self.order)) != len(self.order):
            raise RuntimeError("a top-level module runs twice: the prefix cache does not apply")

    def forward(self, model: torch.nn.Module, x: torch.Tensor, conv: str, dtype: torch.dtype,
                keep: list[str]) -> torch.Tensor:
        model = keep_in_fp32(copy.deepcopy(model), keep)
        before = self.order[:self.order.index(conv.split(".")[0])]
        outs = []
        with torch.inference_mode():
            for chunk, record in zip(x.split(CHUNK), self.outputs):
                for name in before:
                    getattr(model, name).forward = lambda *a, _o=record[name], **k: _o
                with torch.autocast("cpu", dtype=dtype), EmulateKernels(dtype):
                    outs.append(model(chunk)[0].float())
        return torch.cat(outs)


def cancellation(model: torch.nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """Per conv: the output channel whose value is the sum of the largest terms relative to it,
    rms(Σ|w·x| + |b|) / rms(out), and that channel's dominant input."""
    found: dict[str, dict] = {}
    mods = dict(model.named_modules())

    def hook(name: str):
        def record(m: torch.nn.Conv2d, inputs, out: torch.Tensor) -> None:
            xin = inputs[0]
            terms = torch.nn.functional.conv2d(xin.abs(), m.weight.abs(), None, m.stride, m.padding, m.dilation)
            terms = terms + m.bias.abs().view(1, -1, 1, 1)
            ratio = terms.pow(2).mean((0, 2, 3)).sqrt() / out.pow(2).mean((0, 2, 3)).sqrt().clamp_min(1e-12)
            c = int(ratio.argmax())
            x_rms = xin.pow(2).mean((0, 2, 3)).sqrt()
            contrib = m.weight[c].abs().amax((1, 2)) * x_rms
            i = int(contrib.argmax())
            found[name] = {"cancellation": round(float(ratio[c]), 1), "channels_over_10": int((ratio > 10).sum()),
                           "out_channel": c,
                           "out_rms": round(float(out[:, c].pow(2).mean().sqrt()), 3),
                           "bias": round(float(m.bias[c]), 3), "in_channel": i,
                           "in_rms": round(float(x_rms[i]), 2), "in_mean": round(float(xin[:, i].mean()), 2),
                           "weight_max": round(float(m.weight[c, i].abs().max()), 4)}
        return record

    hooks = [mods[n].register_forward_hook(hook(n)) for n in conv_names(model)]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return found


def order_of(ranking: list[tuple[float, str, float]], conv: str) -> int:
    """1-based place of ``conv`` in the sensitivity ranking."""
    return 1 + [c for _, c, _ in ranking].index(conv)


def _spacing(value: float, mantissa_bits: int) -> float:
    return float(2.0 ** (np.floor(np.log2(abs(value))) - mantissa_bits)) if value else 0.0


# ------------------------------------------------------------------------------------------ main
def load_photos(limit: int, preprocessing) -> tuple[list[str], torch.Tensor]:
    from PIL import Image
    from skimage import data

    names, arrays = [], []
    for name in PHOTOS:
        if len(names) == limit:
            break
        try:
            pixels = getattr(data, name)()
        except (AttributeError, ImportError, OSError, ValueError):  # absent here, or needs a download
            continue
        names.append(name)
        arrays.append(preprocessing(Image.fromarray(np.asarray(pixels))))
    return names, torch.from_numpy(np.stack(arrays))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--weights", help="weights file/folder (default: the registry's, via fetch_weights)")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--sensitivity-images", type=int, default=2,
                        help="the photos with the largest bf16 error used for the per-conv scan")
    parser.add_argument("--target", type=float, default=2.0, help="mean mask error to reach (/255)")
    parser.add_argument("--no-check", action="store_true", help="skip the real-autocast check (slow on CPUs "
                        "without bf16 instructions)")
    parser.add_argument("--json", help="also write the JSON lines here")
    args = parser.parse_args(argv)

    try:
        from u2seg.preprocessing import Preprocessing
    except ImportError:  # older layout
        from u2seg.infer.predictor import Preprocessing
    from u2seg.weights import fetch_weights, load_network

    start = time.perf_counter()
    if args.json:
        open(args.json, "w").close()  # each figure is appended as it comes

    def emit(figure: str, **fields) -> None:
        line = json.dumps({"figure": figure, **fields})
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as sink:
                sink.write(line + "\n")

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    weights = args.weights or fetch_weights(args.model)
    net = load_network(None, weights).eval()
    arch = getattr(net, "arch", args.model)
    preprocessing = Preprocessing()
    names, x = load_photos(args.images, preprocessing)
    convs = conv_names(net)
    macs = conv_macs(net, preprocessing.size)
    emit("setup", model=arch, weights=str(weights), torch=torch.__version__,
         cpu_capability=torch.backends.cpu.get_cpu_capability(),
         avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()), threads=torch.get_num_threads(),
         photos=names, convs=len(convs), size=list(preprocessing.size),
         fp16_autocast_on_cpu="supported (emulated here like bf16)")

    reference_logits = forward(net, x)
    reference = masks(reference_logits)
    progress("fp32 reference")

    # which dtype each op runs in under CPU autocast (this torch), and the emulation's gap
    ops: dict[str, dict] = {}
    for dtype in (torch.bfloat16, torch.float16):
        log: dict[str, str] = {}
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype), EmulateKernels(dtype, log):
            net(x[:1, :, :64, :64])
        ops[_short(dtype)] = dict(sorted(log.items()))
    emit("autocast_ops", ops=ops, note="ops not listed saw no reduced tensor")

    if not args.no_check:
        small = torch.nn.functional.interpolate(x[:1], size=(96, 96), mode="bilinear", antialias=True)
        ref_small = masks(forward(net, small))
        for dtype in (torch.bfloat16, torch.float16):
            t0 = time.perf_counter()
            real = forward(net, small, dtype=dtype, real=True)
            seconds = time.perf_counter() - t0
            emulated = forward(net, small, dtype=dtype)
            emit("emulation_check", dtype=_short(dtype), image=names[0], size=[96, 96],
                 real_vs_fp32=errors(real, ref_small, names[:1])["mean"],
                 emulated_vs_fp32=errors(emulated, ref_small, names[:1])["mean"],
                 emulated_vs_real=errors(emulated, masks(real), names[:1])["mean"],
                 emulated_vs_real_max=errors(emulated, masks(real), names[:1])["max"],
                 real_seconds=round(seconds, 1))
        progress("emulation check")

    g = torch.Generator().manual_seed(0)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    noisy = x + (torch.rand(x.shape, generator=g) - 0.5) / 255 / std
    emit("noise_floor", **errors(forward(net, noisy), reference, names))

    # (a) everything reduced
    plain: dict[str, dict] = {}
    for dtype in (torch.bfloat16, torch.float16):
        plain[_short(dtype)] = errors(forward(net, x, dtype=dtype), reference, names)
        emit("all_reduced", dtype=_short(dtype), **plain[_short(dtype)])
    progress("all reduced")

    variants = {
        "bf16: conv weights+biases only": RoundConvs(weights=_cast(torch.bfloat16)),
        "bf16: conv inputs only": RoundConvs(inputs=_cast(torch.bfloat16)),
        "fp16: conv inputs+weights cast and back": RoundConvs(inputs=_cast(torch.float16), weights=_cast(torch.float16)),
        "tf32 convs (CUDA fp32 default)": RoundConvs(inputs=_tf32, weights=_tf32),
    }
    for label, mode in variants.items():
        emit("decomposition", variant=label, **errors(forward(net, x, mode=mode), reference, names))
    progress("decomposition")

    # (b) each conv alone reduced, on the photos where bf16 does worst
    per_image = plain["bf16"]["per_image"]
    chosen = sorted(range(len(names)), key=lambda i: -per_image[names[i]][0])[:args.sensitivity_images]
    sub_names = [names[i] for i in chosen]
    sub_x, sub_ref = x[chosen], reference[chosen]
    cache = PrefixCache(net, sub_x)
    ranking = []
    for n, conv in enumerate(convs):
        logits = cache.forward(net, sub_x, conv, torch.bfloat16, [c for c in convs if c != conv])
        result = errors(logits, sub_ref, sub_names)
        ranking.append((result["mean"], conv, result["max"]))
        if n % 20 == 19:
            progress(f"sensitivity {n + 1}/{len(convs)}")
    ranking.sort(key=lambda r: -r[0])
    emit("sensitivity", dtype="bf16", photos=sub_names,
         all_reduced=round(float(np.mean([per_image[n][0] for n in sub_names])), 3),
         ranking=[{"conv": c, "mean": m, "max": mx} for m, c, mx in ranking],
         sum_of_alone=round(sum(r[0] for r in ranking), 3))
    progress("sensitivity")

    found = cancellation(net, sub_x[:2])
    top = max(found, key=lambda k: found[k]["cancellation"])
    info = found[top]
    mods = dict(net.named_modules())
    largest_bias = float(mods[top].bias.detach().abs().max())
    emit("mechanism", conv=top, sensitivity_rank=order_of(ranking, top), **info,
         bf16_step_at_input=_spacing(info["in_rms"], 7), fp16_step_at_input=_spacing(info["in_rms"], 10),
         largest_bias=round(largest_bias, 2), bf16_step_at_largest_bias=_spacing(largest_bias, 7),
         fp16_step_at_largest_bias=_spacing(largest_bias, 10),
         largest_cancellation=[{"conv": k, **v} for k, v in
                               sorted(found.items(), key=lambda kv: -kv[1]["cancellation"])[:5]])

    # (c) keep sets
    order = [c for _, c, _ in ranking]
    results: dict[str, tuple[list[str], dict]] = {}

    def keep(label: str, names_kept: Sequence[str], dtype: torch.dtype = torch.bfloat16) -> dict:
        result = errors(forward(net, x, dtype=dtype, keep=names_kept), reference, names)
        results[label] = (list(names_kept), result)
        emit("keep", set=label, dtype=_short(dtype), fp32=list(names_kept), fp32_mac_share=fp32_share(names_kept, macs),
             **result)
        progress(f"keep {label}")
        return result

    results["top-0"] = ([], plain["bf16"])
    for k in (1, 2, 4, 8):
        keep(f"top-{k}", order[:k])
    keep("heads", HEADS)
    keep("last decoder stage", LAST_DECODER)
    keep("heads + last decoder stage", HEADS + LAST_DECODER)
    minimal = next((k for k in (1, 2, 4, 8) if results[f"top-{k}"][1]["mean"] <= args.target), None)
    if minimal is not None:
        chosen_set = order[:minimal]
        for dropped in chosen_set if minimal > 1 else ():
            rest = [c for c in chosen_set if c != dropped]
            if rest != order[:minimal - 1]:  # that one is measured already
                keep(f"top-{minimal} without {dropped}", rest)
        stage = sorted({c.split(".")[0] for c in chosen_set})
        keep("stages of the minimal set", stage)
        keep(f"top-{minimal} + heads + last decoder stage", list(chosen_set) + list(HEADS + LAST_DECODER))
        fp16 = keep(f"top-{minimal}, fp16", chosen_set, torch.float16)
        emit("summary", model=arch, target=args.target, minimal_set=chosen_set,
             fp32_mac_share=fp32_share(chosen_set, macs), bf16=results[f"top-{minimal}"][1],
             fp16={k: fp16[k] for k in ("mean", "worst", "worst_image", "max")},
             plain_bf16={k: plain["bf16"][k] for k in ("mean", "worst", "worst_image", "max")},
             plain_fp16={k: plain["fp16"][k] for k in ("mean", "worst", "worst_image", "max")},
             seconds=round(time.perf_counter() - start, 1))
    else:
        emit("summary", model=arch, target=args.target, minimal_set=None,
             note="no top-k set up to 8 reached the target", seconds=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
