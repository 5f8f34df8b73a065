"""The container files agree with the code: the Dockerfile's and compose.yaml's commands are valid
`u2seg serve` command lines, the image's paths are the ones u2seg reads. (The image itself is
built and run by `make test-image`: tests/image/.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from u2seg.apps.server import build_arg_parser

REPO = Path(__file__).resolve().parents[1]


def _serve_args(command: list[str]) -> list[str]:
    assert command[:2] == ["u2seg", "serve"], command
    return command[2:]


def test_dockerfile_command_and_environment():
    text = (REPO / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
    args = build_arg_parser().parse_args(_serve_args(json.loads(cmd)))
    assert args.host == "0.0.0.0" and args.port == 7000
    assert re.search(r"^EXPOSE 7000$", text, re.M)
    assert "U2SEG_HOME=/var/lib/u2seg" in text and "U2SEG_PRETRAINED=/opt/u2seg/pretrained" in text
    assert re.search(r"^VOLUME /var/lib/u2seg$", text, re.M) and re.search(r"^USER 10001", text, re.M)
    assert "/healthz" in text and "HEALTHCHECK" in text
    makefile_torch = re.search(r"torch==([0-9.]+)", (REPO / "Makefile").read_text()).group(1)
    assert f"ARG TORCH_VERSION={makefile_torch}" in text


def test_the_image_bakes_the_default_weights():
    """`u2seg remove` and `serve` in the container use the default model offline."""
    from u2seg.weights import DEFAULT_WEIGHTS

    (baked,) = re.findall(r'^ARG WEIGHTS="?([^"\n]*)"?$', (REPO / "Dockerfile").read_text(), re.M)
    assert DEFAULT_WEIGHTS in baked.split() and "u2netp" in baked.split()


def test_compose_runs_the_service_with_keys_and_limits():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["u2seg"]
    args = build_arg_parser().parse_args(_serve_args(service["command"]))
    assert args.api_keys == "/run/secrets/u2seg_keys" and "u2seg_keys" in service["secrets"]
    assert args.key_rpm and args.key_concurrency and args.host == "0.0.0.0"
    assert compose["secrets"]["u2seg_keys"]["file"]
    volume, target = service["volumes"][0].split(":")[:2]
    assert target == "/var/lib/u2seg" and volume in compose["volumes"]
