"""The container image, for real (``make test-image``, after ``make image``; not part of ``make test``).

Runs the built image with podman (or docker): ``u2seg remove`` on a mounted folder gives the same
cutouts as this machine's u2seg; the service answers a cutout; the user is not root; the baked
weights work offline under an empty cache volume; the health check passes. Prints the image's
size and the service's start-up time (for BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "localhost/u2seg:latest")
ENGINE = shutil.which("podman") or shutil.which("docker")
pytestmark = pytest.mark.skipif(ENGINE is None, reason="neither podman nor docker is installed")


def engine(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    conf = REPO / "build" / "containers.conf"  # written by container/build_image.sh for podman
    if ENGINE and ENGINE.endswith("podman") and conf.is_file():
        env["CONTAINERS_CONF"] = str(conf)
    result = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{ENGINE} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    inspect = engine("image", "inspect", IMAGE, check=False)
    if inspect.returncode != 0:
        pytest.fail(f"no image {IMAGE}: run 'make image' first (make test-image does)")
    return IMAGE


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("in")
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg", quality=92)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    folder.chmod(0o755)
    return folder


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def _writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the container's user (uid 10001) writes here
    return path


def test_image_runs_as_non_root_with_its_metadata(image):
    (info,) = json.loads(engine("image", "inspect", image).stdout)
    config = info.get("Config") or info.get("ContainerConfig") or {}
    assert config.get("User", "").split(":")[0] == "10001"
    assert config.get("Cmd")[:2] == ["u2seg", "serve"] and "0.0.0.0" in config["Cmd"]
    assert "/var/lib/u2seg" in (config.get("Volumes") or {})
    health = config.get("Healthcheck") or info.get("Healthcheck") or {}   # docker: in Config; podman: beside it
    assert "/healthz" in " ".join(health.get("Test") or []), "no HEALTHCHECK (podman: build with --format docker)"
    assert engine("run", "--rm", image, "id", "-u").stdout.strip() == "10001"
    size_mb = info["Size"] / 1e6
    print(json.dumps({"figure": "image_size_mb", "value": round(size_mb, 1), "image": image}))


def test_remove_on_a_mounted_folder_equals_the_hosts(image, inputs, tmp_path):
    container_out = _writable_dir(tmp_path / "container-out")
    engine("run", "--rm", "--network", "none", "-v", f"{inputs}:/in:ro", "-v", f"{container_out}:/out",
           image, "u2seg", "remove", "/in", "-o", "/out")
    host_out = tmp_path / "host-out"
    subprocess.run([sys.executable, "-m", "u2seg", "remove", str(inputs), "-o", str(host_out)], check=True,
                   capture_output=True, timeout=600)
    names = sorted(p.name for p in host_out.iterdir() if p.suffix == ".png")   # beside the job's manifest
    assert names == ["astronaut.png", "coffee.png"]
    assert sorted(p.name for p in container_out.iterdir() if p.suffix == ".png") == names
    for name in names:
        ours, theirs = _pixels(host_out / name), _pixels(container_out / name)
        assert ours.shape == theirs.shape
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1, name


def test_baked_weights_survive_an_empty_cache_volume_offline(image, inputs, tmp_path):
    volume = f"u2seg-test-{uuid.uuid4().hex[:8]}"
    out = _writable_dir(tmp_path / "out")
    try:
        engine("volume", "create", volume)
        engine("run", "--rm", "--network", "none", "-e", "U2SEG_OFFLINE=1", "-v", f"{volume}:/var/lib/u2seg",
               "-v", f"{inputs}:/in:ro", "-v", f"{out}:/out", image,
               "u2seg", "remove", "/in/coffee.jpg", "-o", "/out", "--only-mask")
    finally:
        engine("volume", "rm", "-f", volume, check=False)
    mask = Image.open(out / "coffee.png")
    assert mask.mode == "L" and mask.size == (600, 400)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_service_answers_a_cutout_and_stops(image, inputs):
    port = _free_port()
    name = f"u2seg-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    engine("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7000", image)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=3) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            state = engine("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            assert state in ("running", "created", "configured"), engine("logs", name, check=False).stderr[-3000:]
            assert time.monotonic() < deadline, engine("logs", name, check=False).stderr[-3000:]
            time.sleep(0.5)
        ready = time.monotonic() - started
        print(json.dumps({"figure": "service_ready_s", "value": round(ready, 1)}))

        body = (inputs / "coffee.jpg").read_bytes()
        request = urllib.request.Request(url + "/api/remove", data=body, headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/png"
            cutout = Image.open(io.BytesIO(response.read()))
        assert cutout.mode == "RGBA" and cutout.size == (600, 400)
        alpha = np.asarray(cutout.getchannel("A"))
        assert alpha[160:280, 200:360].mean() > 200 and alpha[:40, :80].mean() < 50
        if ENGINE.endswith("podman"):  # the image's HEALTHCHECK, run once
            assert engine("healthcheck", "run", name, check=False).returncode == 0
    finally:
        engine("stop", "-t", "10", name, check=False)
        logs = engine("logs", name, check=False)
        engine("rm", "-f", name, check=False)
    assert "u2seg web page" in logs.stderr + logs.stdout
