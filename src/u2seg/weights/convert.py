"""Read weights from every format u2seg meets and load them into models.

Formats: official ``.pth`` state_dicts (plain or ``module.``-prefixed; read with
``weights_only=True`` so no pickled code runs), training checkpoints holding a ``model`` entry,
ONNX files exported from the official model with BatchNorm folded into the convs, and u2seg's own
``save_pretrained`` folders (``model.safetensors`` + ``config.json``) or lone ``.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from ..fileio import write_bytes_atomic
from ..models import U2NET_CONFIGS, create_model, list_models
from .checksum import sha256_file
from .folder import CONFIG_FILE, WEIGHTS_FILE, read_verified_config

__all__ = [
    "LoadedWeights", "read_weights", "load_weights_into", "load_model", "save_pretrained",
    "infer_architecture", "state_dict_from_fused_onnx", "convert_file", "WEIGHTS_FILE", "CONFIG_FILE",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_CONFIG_METADATA_KEY = "u2seg_config"


@dataclass
class LoadedWeights:
    """A state_dict plus what is known about it (``arch`` may be inferred later)."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def arch(self) -> str | None:
        return self.config.get("model")


# --------------------------------------------------------------------------------------------
# reading


def read_weights(path: str | Path, *, arch: str | None = None) -> LoadedWeights:
    """Read any supported weights file or folder into a state_dict on the CPU.

    ``arch`` is only needed for fused ONNX files when it cannot be inferred.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    if path.is_dir():
        return _read_pretrained_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".onnx":
        found_arch, state_dict = state_dict_from_fused_onnx(path, arch=arch)
        return LoadedWeights(state_dict, {"model": found_arch, "source": str(path)}, path)
    if suffix in {".pth", ".pt", ".bin", ".ckpt"}:
        return _read_torch(path)
    raise WeightsError(f"{path}: unknown weights format {suffix!r} "
                       f"(expected .pth, .pt, .onnx, .safetensors or a u2seg folder)")


def _read_torch(path: Path) -> LoadedWeights:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file: say which
        raise WeightsError(f"{path}: cannot read as a PyTorch state_dict ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    config: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # u2seg/trainer checkpoints
        config = obj.get("config", {}).get("model_config", {}) if isinstance(obj.get("config"), dict) else {}
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict (a mapping of names to tensors)")
    state_dict = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    return LoadedWeights(state_dict, dict(config), path)


def _read_safetensors(path: Path, config: dict[str, Any] | None = None) -> LoadedWeights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if config is None:
        config = json.loads(meta[_CONFIG_METADATA_KEY]) if _CONFIG_METADATA_KEY in meta else {}
    return LoadedWeights(state_dict, config, path)


def _read_pretrained_dir(directory: Path) -> LoadedWeights:
    config = read_verified_config(directory)
    return _read_safetensors(directory / WEIGHTS_FILE, config)


# --------------------------------------------------------------------------------------------
# fused ONNX


def _conv_modules_in_forward_order(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Run a tiny input once and record each Conv2d the first time it executes."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    order: list[tuple[str, nn.Conv2d]] = []
    seen: set[nn.Module] = set()

    def hook(module: nn.Module, *_: Any) -> None:
        if module not in seen:
            seen.add(module)
            order.append((names[module], module))

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        param = next(model.parameters())
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.in_channels, 32, 32, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order


def _onnx_convs(path: Path) -> list[tuple[str, Any, Any]]:
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from exc
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # some exporters put weights in Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = numpy_helper.to_array(attr.t)
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in tensors:
            raise WeightsError(f"{path}: conv {node.name!r} has no constant weight; not a plain exported model")
        bias = tensors.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((node.name, tensors[node.input[1]], bias))
    return convs


def _fill_from_fused_convs(model: nn.Module, convs: list[tuple[str, Any, Any]], source: str) -> None:
    modules = _conv_modules_in_forward_order(model)
    if len(modules) != len(convs) or any(tuple(m.weight.shape) != w.shape for (_, m), (_, w, _) in zip(modules, convs)):
        raise WeightsError(f"{source}: its {len(convs)} convs do not match the {len(modules)} convs of "
                           f"model {getattr(model, 'arch', type(model).__name__)!r}")
    bn_of = {}
    for module in model.modules():  # REBNCONV pairs conv_s1 with bn_s1
        if hasattr(module, "conv_s1") and hasattr(module, "bn_s1"):
            bn_of[module.conv_s1] = module.bn_s1
    with torch.no_grad():
        for (_, conv), (_, weight, bias) in zip(modules, convs):
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(bias.copy()) if bias is not None else torch.zeros_like(conv.bias))
            bn = bn_of.get(conv)
            if bn is not None:  # the scale and shift are already inside the conv: make BN identity
                bn.weight.fill_(1.0)
                bn.bias.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.num_batches_tracked.zero_()


def state_dict_from_fused_onnx(path: str | Path, *, arch: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """Map the conv nodes of an ONNX export (graph order) onto a U²-Net's convs (forward order).

    Returns ``(arch, state_dict)``; ``arch`` is tried over the U²-Net family when not given.
    """
    path = Path(path)
    convs = _onnx_convs(path)
    if not convs:
        raise WeightsError(f"{path}: the ONNX graph has no Conv nodes")
    out_ch, in_ch = convs[-1][1].shape[0], convs[0][1].shape[1]
    candidates = [arch] if arch else list(U2NET_CONFIGS)
    for name in candidates:
        model = create_model(name, num_classes=out_ch, in_channels=in_ch)
        try:
            _fill_from_fused_convs(model, convs, str(path))
        except WeightsError:
            if arch:
                raise
            continue
        return name, model.state_dict()
    raise WeightsError(f"{path}: the ONNX graph matches none of the models {', '.join(candidates)}")


# --------------------------------------------------------------------------------------------
# architecture inference and loading


def infer_architecture(state_dict: dict[str, torch.Tensor]) -> tuple[str, int, int]:
    """Find ``(arch, num_classes, in_channels)`` whose state_dict has these names and shapes."""
    for name in list_models():
        with torch.device("meta"):
            probe = create_model(name)
        keys = list(probe.state_dict())
        if set(keys) != set(state_dict):
            continue
        weights = [k for k in keys if k.endswith("weight") and state_dict[k].ndim == 4]
        in_ch, num_classes = state_dict[weights[0]].shape[1], state_dict[weights[-1]].shape[0]
        with torch.device("meta"):
            probe = create_model(name, num_classes=num_classes, in_channels=in_ch)
        if all(v.shape == state_dict[k].shape for k, v in probe.state_dict().items()):
            return name, int(num_classes), int(in_ch)
    raise WeightsError(f"the weights match none of the known models ({', '.join(list_models())}); "
                       f"{len(state_dict)} tensors, first {next(iter(state_dict), None)!r}")


def load_weights_into(model: nn.Module, path: str | Path | LoadedWeights) -> list[str]:
    """Load weights into ``model``; returns the names it could not load (head of another size).

    Shapes that all match load strictly. If only some differ (fine-tuning with a new
    ``num_classes``), the compatible tensors load and the others are listed in the log.
    """
    if isinstance(path, LoadedWeights):
        loaded = path
    elif Path(path).suffix.lower() == ".onnx":
        # Map directly onto this model, whatever its arch name.
        convs = _onnx_convs(Path(path))
        _fill_from_fused_convs(model, convs, str(path))
        return []
    else:
        loaded = read_weights(path)
    where = loaded.path or "weights"
    own = model.state_dict()
    missing = [k for k in own if k not in loaded.state_dict]
    unexpected = [k for k in loaded.state_dict if k not in own]
    if missing or unexpected:
        arch = loaded.arch
        if arch is None:
            try:
                arch = infer_architecture(loaded.state_dict)[0]
            except WeightsError:
                arch = None
        hint = f" (they are {arch!r} weights)" if arch else ""
        raise WeightsError(f"{where}: weights do not fit model {getattr(model, 'arch', type(model).__name__)!r}{hint}: "
                           f"{len(missing)} missing, {len(unexpected)} unexpected tensors")
    skipped = [k for k, v in own.items() if v.shape != loaded.state_dict[k].shape]
    if skipped:
        compatible = {k: v for k, v in loaded.state_dict.items() if k not in skipped}
        model.load_state_dict(compatible, strict=False)
        log.warning("%s: loaded %d tensors, skipped %d of another shape: %s", where, len(compatible),
                    len(skipped), ", ".join(skipped))
    else:
        model.load_state_dict(loaded.state_dict, strict=True)
    return skipped


def load_model(path: str | Path, *, arch: str | None = None) -> nn.Module:
    """Build the model that a weights file describes (or ``arch``) and load the weights into it."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        found, state_dict = state_dict_from_fused_onnx(path, arch=arch)
        loaded = LoadedWeights(state_dict, {"model": found}, path)
    else:
        loaded = read_weights(path)
    known = loaded.config
    if all(known.get(k) for k in ("model", "num_classes", "in_channels")) and arch in (None, known["model"]):
        arch, num_classes, in_ch = known["model"], known["num_classes"], known["in_channels"]
    elif arch is None:
        arch, num_classes, in_ch = infer_architecture(loaded.state_dict)
        arch = loaded.arch or arch
    else:
        _, num_classes, in_ch = infer_architecture(loaded.state_dict)
    model = create_model(arch, num_classes=num_classes, in_channels=in_ch)
    load_weights_into(model, loaded)
    model.weights_config = dict(loaded.config)
    return model


# --------------------------------------------------------------------------------------------
# writing


def save_pretrained(model: nn.Module, directory: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (with the weights' sha256) into ``directory``.

    Both files are written atomically, the config last, so a reader never sees a config whose
    checksum describes a half-written weights file.
    """
    from safetensors.torch import save as safetensors_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "format": "u2seg", "format_version": FORMAT_VERSION,
        "model": getattr(model, "arch", None),
        "num_classes": getattr(model, "num_classes", None),
        "in_channels": getattr(model, "in_channels", None),
    }
    config.update(metadata or {})
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(state_dict, metadata={_CONFIG_METADATA_KEY: json.dumps(config)})
    config["sha256"] = hashlib.sha256(data).hexdigest()
    write_bytes_atomic(data, directory / WEIGHTS_FILE)
    write_bytes_atomic((json.dumps(config, indent=2) + "\n").encode(), directory / CONFIG_FILE)
    return directory


def convert_file(source: str | Path, directory: str | Path, *, arch: str | None = None) -> Path:
    """Convert any readable weights into a u2seg folder (``u2seg weights convert IN OUT``)."""
    source, directory = Path(source), Path(directory)
    if directory.exists() and not directory.is_dir():
        raise WeightsError(f"{directory}: exists and is not a folder; nothing was written")
    model = load_model(source, arch=arch)
    metadata = {k: v for k, v in model.weights_config.items()
                if k in ("input_size", "mean", "std", "license", "weights")}
    metadata["source"] = str(source)
    if source.is_file():
        metadata["source_sha256"] = sha256_file(source)
    return save_pretrained(model, directory, metadata=metadata)
