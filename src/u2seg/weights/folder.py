"""u2seg weights folders (``model.safetensors`` + ``config.json``), read without torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ChecksumError, WeightsError
from .checksum import sha256_file

__all__ = ["WEIGHTS_FILE", "CONFIG_FILE", "read_verified_config"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_verified_config(directory: Path) -> dict[str, Any]:
    """The folder's config, after checking the weights file against the sha256 it records."""
    weights, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        raise WeightsError(f"{directory}: not a u2seg weights folder (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise WeightsError(f"{config_path}: not valid JSON ({exc})") from None
    expected = config.get("sha256")
    if expected and sha256_file(weights) != expected:
        raise ChecksumError(f"{weights}: sha256 does not match {CONFIG_FILE}; the file is corrupt and was not used")
    return config
