"""`u2seg bench`: the stage figures of remove's own work, on generated photos or the user's."""

from __future__ import annotations

import json

from PIL import Image

from u2seg.cli import main
from u2seg.infer.bench import generated_photos
from u2seg.infer.engine import STAGES


def test_bench_without_the_network_on_generated_photos(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--no-network", "--count", "4", "--megapixels", "0.05", "--photos-dir",
                 str(tmp_path / "photos"), "--workers", "2", "--json", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    assert figures["images"] == 4 and figures["failed"] == 0 and figures["images_per_s"] > 0
    assert set(figures["stages"]) == set(STAGES) and figures["stages"]["encode"] > 0
    assert figures["settings"]["backend"] == "none" and figures["settings"]["workers"] == 2
    printed = capsys.readouterr().out
    assert "ms/image" in printed and "images/s" in printed
    assert len(list((tmp_path / "photos").iterdir())) == 4  # kept for the next run


def test_bench_on_the_users_files_with_the_network(use_pretrained_home, coffee, tmp_path, capsys):
    Image.fromarray(coffee).save(tmp_path / "coffee.jpg")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "bench.json"
    assert main(["bench", str(tmp_path / "coffee.jpg"), str(tmp_path / "broken.png"), "--json", str(out),
                 "-m", "u2netp"]) == 0
    figures = json.loads(out.read_text())
    assert figures["images"] == 2 and figures["failed"] == 1
    assert figures["stages"]["network"] > 0 and 0 < figures["network_share"] < 1
    assert figures["settings"]["model"] == "u2netp"
    assert not list(tmp_path.glob("*.png.*"))  # nothing written beside the inputs


def test_generated_photos_have_the_asked_mean_size(tmp_path):
    files = generated_photos(tmp_path, count=30, megapixels=1.5)
    sizes = [Image.open(f).size for f in files]
    mean = sum(w * h for w, h in sizes) / len(sizes) / 1e6
    assert 1.0 < mean < 1.6 and max(max(s) for s in sizes) <= 3840
    assert {f.suffix for f in files} == {".jpg", ".png"}
