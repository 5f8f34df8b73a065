"""Videos and animated images: containers round-trip, audio, rotation, variable frame rate, broken
files, raw streams, folders, the temporal filter and the synthetic clips. Generated clips only
(96×64, a few frames); the network runs U²-Net-P at 64 px, since these tests are about the frames'
way through, not the masks' quality (benchmarks/video.py measures that)."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from u2seg.cli import main  # noqa: E402
from u2seg.data.synth_video import make_synthetic_videos, synth_clip  # noqa: E402
from u2seg.infer.refine import RefineOptions  # noqa: E402
from u2seg.infer.temporal import TemporalFilter, flicker  # noqa: E402
from u2seg.video_read import VideoReader, VideoReadError, is_animated_image, probe_video  # noqa: E402
from u2seg.video_write import VideoWriter  # noqa: E402

W, H, N, FPS = 96, 64, 6, 25


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def predictor(pretrained_home: Path):
    from u2seg.infer import Predictor

    return Predictor(weights=pretrained_home / "weights" / "u2netp", size=64)


@pytest.fixture
def engine(predictor):
    from u2seg.infer import Engine

    with Engine(predictor, batch_size=3, workers=2) as engine:
        yield engine


def clip(width: int = W, height: int = H, frames: int = N, index: int = 0) -> list[np.ndarray]:
    return [f for f, _ in synth_clip(index, width=width, height=height, frames=frames)]


def write_input(path: Path, frames: list[np.ndarray], *, fps: int = FPS, pts: list[int] | None = None,
                time_base: Fraction | None = None, rotation: int = 0, audio_seconds: float = 0.0,
                codec: str = "libx264") -> Path:
    """An input video written with PyAV directly (so what is tested is not what writes it)."""
    height, width = frames[0].shape[:2]
    time_base = time_base or Fraction(1, fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options={"crf": "10"} if codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_seconds:
            audio = out.add_stream("aac", rate=44100, layout="mono")
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = (pts[i] if pts else i), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio is not None:
            samples = int(44100 * audio_seconds)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024]
                if len(chunk) < 1024:
                    chunk = np.pad(chunk, (0, 1024 - len(chunk)))
                aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts, aframe.time_base = 44100, start, Fraction(1, 44100)
                out.mux(audio.encode(aframe))
            out.mux(audio.encode(None))
    return path


def read_all(path: Path) -> tuple[list, object]:
    with VideoReader(path) as video:
        return list(video), video.info


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        end = 0.0
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        return end


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and "tmp" in p.name)


# --------------------------------------------------------------------------- containers


# Largest mean |alpha − intended alpha| (0…255) each format may show: lossy VP9 and 4:2:0,
# ProRes 10-bit, lossless WebP/PNG. GIF is 1-bit: compared with alpha ≥ 128.
ALPHA_TOLERANCE = {"webm": 3.0, "mov": 1.0, "webp": 0.0, "png": 0.0, "gif": 0.0}


@pytest.mark.parametrize("fmt", ["webm", "mov", "mp4", "gif", "webp", "png"])
def test_every_container_round_trips(tmp_path, engine, fmt):
    from u2seg.infer.video import remove_video

    source = write_input(tmp_path / "in.mp4", clip())
    frames_in, info_in = read_all(source)
    intended = []
    out = tmp_path / "out" / f"in.{fmt}"
    result = remove_video(engine, source, out, fmt=fmt, progress=False,
                          on_frame=lambda frame, prob, pixels: intended.append(pixels))
    assert result.frames == N and result.output == out and out.exists()
    assert leftovers(out.parent) == []
    if fmt == "png":
        files = sorted(out.iterdir())
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(1, N + 1)]
        decoded = [np.asarray(Image.open(f)) for f in files]
        assert all(d.shape == (H, W, 4) for d in decoded)
        assert all(np.array_equal(d, i) for d, i in zip(decoded, intended))
        return
    frames_out, info_out = read_all(out)
    assert len(frames_out) == N, fmt
    assert info_out.fps == info_in.fps == FPS
    assert info_out.duration == pytest.approx(info_in.duration, abs=0.5 / FPS)
    assert [f.time for f in frames_out] == pytest.approx([f.time for f in frames_in], abs=1e-3)
    if fmt == "mp4":  # opaque: the cutout over the frame blurred; odd sizes would be padded
        assert frames_out[0].pixels.shape == (H, W, 3)
        error = np.mean([np.abs(o.pixels.astype(int) - i.astype(int)).mean() for o, i in zip(frames_out, intended)])
        assert error < 4.0
        return
    assert all(f.pixels.shape == (H, W, 4) for f in frames_out), fmt  # alpha present
    for got, want in zip(frames_out, intended):
        alpha, target = got.pixels[..., 3].astype(int), want[..., 3].astype(int)
        assert target.min() < 50 and target.max() > 200  # there is something to compare
        if fmt == "gif":
            assert np.array_equal(alpha >= 128, target >= 128)
        else:
            assert np.abs(alpha - target).mean() <= ALPHA_TOLERANCE[fmt], fmt


def test_only_mask_writes_the_matte(tmp_path, engine):
    from u2seg.infer.video import remove_video

    source = write_input(tmp_path / "in.mp4", clip())
    intended = []
    remove_video(engine, source, tmp_path / "m.webm", options=RefineOptions(only_mask=True), fmt="webm",
                 progress=False, on_frame=lambda frame, prob, pixels: intended.append(pixels))
    frames, info = read_all(tmp_path / "m.webm")
    assert len(frames) == N and not info.alpha and intended[0].ndim == 2
    grey = frames[2].pixels[..., :3].astype(int)
    assert np.abs(grey - intended[2][..., None]).mean() < 3.0


def test_odd_sizes_and_variable_frame_rate_keep_their_timing(tmp_path, engine):
    from u2seg.infer.video import remove_video

    pts = [0, 40, 120, 130, 200, 330]  # milliseconds: a variable rate
    source = write_input(tmp_path / "vfr.mkv", clip(97, 65), pts=pts, time_base=Fraction(1, 1000), codec="ffv1")
    frames_in, _ = read_all(source)
    assert [f.pts for f in frames_in] == pts
    for fmt in ("webm", "mov", "mp4", "gif", "webp"):
        out = tmp_path / f"vfr.{fmt}"
        remove_video(engine, source, out, fmt=fmt, progress=False)
        frames, info = read_all(out)
        # mp4 (4:2:0, opaque) pads odd sizes by one replicated row and column
        assert frames[0].pixels.shape == ((66, 98, 3) if fmt == "mp4" else (65, 97, 4)), fmt
        assert [round(f.time * 1000) for f in frames] == pts, fmt
        assert info.duration == pytest.approx(0.37, abs=0.002), fmt


def test_audio_is_kept(tmp_path, engine):
    from u2seg.infer.video import remove_video

    source = write_input(tmp_path / "talk.mp4", clip(frames=10), audio_seconds=0.4)
    assert probe_video(source).has_audio
    seconds = audio_seconds(source)
    copied = remove_video(engine, source, tmp_path / "talk.mov", fmt="mov", progress=False)  # AAC: copied
    assert copied.note is None and audio_seconds(tmp_path / "talk.mov") == pytest.approx(seconds, abs=0.05)
    reencoded = remove_video(engine, source, tmp_path / "talk.webm", fmt="webm", progress=False)  # WebM: Opus
    assert "opus" in reencoded.note
    with av.open(str(tmp_path / "talk.webm")) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
    assert audio_seconds(tmp_path / "talk.webm") == pytest.approx(seconds, abs=0.05)
    dropped = remove_video(engine, source, tmp_path / "talk.gif", fmt="gif", progress=False)
    assert "audio was left out" in dropped.note


def test_rotation_metadata_is_honoured(tmp_path, engine):
    from u2seg.infer.video import remove_video

    frames = clip()
    for f in frames:
        f[:8, :8] = (255, 0, 0)  # a red mark in the stored picture's top-left corner
    source = write_input(tmp_path / "phone.mp4", frames, rotation=90)
    shown, info = read_all(source)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    # 90° counter-clockwise (FFmpeg's display matrix, as players apply it): top-left → bottom-left.
    assert shown[0].pixels.shape == (W, H, 3)
    assert shown[0].pixels[-4, 3, 0] > 200 and shown[0].pixels[-4, 3, 1] < 60
    remove_video(engine, source, tmp_path / "phone.webm", fmt="webm", progress=False)
    out, info_out = read_all(tmp_path / "phone.webm")
    assert out[0].pixels.shape == (W, H, 4) and info_out.rotation == 0


def test_interrupted_run_leaves_nothing(tmp_path, engine):
    from u2seg.infer.video import VideoInterrupted, remove_video

    source = write_input(tmp_path / "in.mp4", clip())

    def stop(frame, prob, pixels):
        if frame.index == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VideoInterrupted, match=r"interrupted after 2 of 6 frames; nothing was written"):
        remove_video(engine, source, out / "in.webm", progress=False, on_frame=stop)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- the command line


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["remove", *args, "-m", "u2netp", "--size", "64"])
    return code, capsys.readouterr().err


def test_corrupt_and_truncated_videos_give_one_line_and_no_output(tmp_path, use_pretrained_home, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "garbage.mp4").write_bytes(b"not a video at all " * 50)
    good = tmp_path / "good.webm"
    with VideoWriter(good, "webm", width=W, height=H, mode="RGB", time_base=Fraction(1, FPS), rate=FPS) as writer:
        for i, f in enumerate(clip(frames=30)):
            writer.write(f, i, 1)
    data = good.read_bytes()
    (folder / "cut.webm").write_bytes(data[: len(data) * 6 // 10])  # truncated: frames stop early
    out = tmp_path / "out"
    code, err = run_cli([str(folder), "-o", str(out)], capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 2, err
    assert any("garbage.mp4: not a readable video" in line for line in lines)
    assert any("cut.webm: truncated video" in line for line in lines)
    assert not out.exists() or [p.name for p in out.iterdir() if not p.name.startswith(".u2seg")] == []


def test_animated_gif_in_a_folder_comes_out_animated(tmp_path, use_pretrained_home, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.fromarray(f) for f in clip(frames=5)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=[60, 80, 60, 100, 60],
                   loop=0)
    frames[0].save(folder / "still.jpg")
    frames[0].save(folder / "moving.png", save_all=True, append_images=frames[1:3], duration=50, loop=0)  # APNG
    frames[0].save(folder / "flat.png")
    assert is_animated_image(folder / "anim.gif") and not is_animated_image(folder / "still.jpg")
    assert is_animated_image(folder / "moving.png") and not is_animated_image(folder / "flat.png")
    out = tmp_path / "out"
    code, err = run_cli([str(folder), "-o", str(out)], capsys)
    assert code == 0, err
    assert (out / "still.png").is_file() and (out / "flat.png").is_file()
    with Image.open(out / "moving.webp") as im:
        assert im.n_frames == 3
    with Image.open(out / "anim.webp") as im:
        assert im.n_frames == 5 and im.mode == "RGBA"
        durations = []
        for i in range(5):
            im.seek(i)
            im.load()
            durations.append(im.info["duration"])
        assert durations == [60, 80, 60, 100, 60]
    # --video-format governs animated images too; --format the still ones.
    code, err = run_cli([str(folder), "-o", str(tmp_path / "g"), "--video-format", "gif", "--format", "webp"], capsys)
    assert code == 0, err
    assert (tmp_path / "g" / "anim.gif").is_file() and (tmp_path / "g" / "still.webp").is_file()
    assert is_animated_image(tmp_path / "g" / "anim.gif")


def test_a_video_and_an_image_with_one_stem_conflict(tmp_path, use_pretrained_home, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_input(folder / "shot.mp4", clip(frames=2))
    Image.fromarray(clip(frames=1)[0]).save(folder / "shot.jpg")
    code, err = run_cli([str(folder), "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "would all write" in err and "shot.png" in err and "shot.webm" in err
    assert not (tmp_path / "out").exists()


def test_raw_frames_from_stdin(tmp_path, use_pretrained_home):
    frames = clip(40, 30, 3)
    data = b"".join(f.tobytes() for f in frames)
    command = [sys.executable, "-m", "u2seg", "remove", "--raw", "40x30", "-", "-m", "u2netp", "--size", "64"]
    env = {**os.environ, "U2SEG_HOME": str(use_pretrained_home)}
    done = subprocess.run([*command, "-o", "-"], input=data, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout) == 3 * 40 * 30 * 4
    rgba = np.frombuffer(done.stdout, np.uint8).reshape(3, 30, 40, 4)
    assert np.array_equal(rgba[..., :3][rgba[..., 3] > 0], np.stack(frames)[rgba[..., 3] > 0])
    done = subprocess.run([*command, "-o", str(tmp_path / "frames")], input=data, capture_output=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["000001.png", "000002.png", "000003.png"]
    done = subprocess.run([*command, "-o", "-"], input=data[:5000], capture_output=True, env=env, timeout=120)
    assert done.returncode == 2 and b"ended inside frame 2" in done.stderr


def test_synth_video_command(tmp_path, capsys):
    assert main(["synth", "--video", str(tmp_path / "clips"), "--count", "2", "--frames", "4", "--size", "64"]) == 0
    info = probe_video(tmp_path / "clips" / "clips" / "00001.mp4")
    assert (info.width, info.height, info.frames) == (64, 48, 4)
    masks = sorted((tmp_path / "clips" / "masks" / "00001").iterdir())
    assert len(masks) == 4 and set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}


# --------------------------------------------------------------------------- the temporal filter


def _noisy_predictions(truth: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Per-frame 'network' maps: soft edges that shimmer and an uncertain patch that blinks."""
    import cv2

    rng = np.random.default_rng(seed)
    maps = []
    for t in truth:
        soft = cv2.GaussianBlur(t.astype(np.float32) / 255.0, (0, 0), 2.0)
        shimmer = cv2.GaussianBlur(rng.normal(0, 0.25, t.shape).astype(np.float32), (0, 0), 1.5)
        p = soft + shimmer * 4 * soft * (1 - soft)
        p[5:20, 5:25] = 0.35 + 0.3 * rng.random()  # an uncertain region, blinking around 0.5
        maps.append(np.clip(p, 0, 1))
    return maps


def test_temporal_filter_halves_flicker_without_losing_accuracy():
    pairs = list(synth_clip(3, width=160, height=120, frames=24))
    frames, truth = [f for f, _ in pairs], [m for _, m in pairs]
    raw = _noisy_predictions(truth)
    filt = TemporalFilter()
    smoothed = [filt(f, p) for f, p in zip(frames, raw)]
    # Away from the moving object's edge (whose soft ramp moves in any correct map), flicker halves
    # at least; everywhere the true mask stayed, it still drops.
    before, after = flicker(raw, truth, margin=4), flicker(smoothed, truth, margin=4)
    assert after <= 0.5 * before, (before, after)
    assert flicker(smoothed, truth) <= 0.8 * flicker(raw, truth)
    mae_raw = np.mean([np.abs(p - t / 255.0).mean() for p, t in zip(raw, truth)])
    mae_smooth = np.mean([np.abs(p - t / 255.0).mean() for p, t in zip(smoothed, truth)])
    assert mae_smooth <= mae_raw * 1.05, (mae_raw, mae_smooth)
    assert all(s.dtype == np.float32 and s.shape == truth[0].shape for s in smoothed)


def test_temporal_filter_follows_motion_and_restarts_on_a_cut():
    pairs = list(synth_clip(1, width=128, height=96, frames=16))
    filt = TemporalFilter()
    for frame, mask in pairs:  # exact maps in: the filter must not drag the moving object behind
        out = filt(frame, mask.astype(np.float32) / 255.0)
        assert np.abs(out - mask / 255.0).mean() < 0.02
    other = next(synth_clip(7, width=128, height=96, frames=1))
    out = filt(other[0], other[1].astype(np.float32) / 255.0)
    assert filt.cuts == 1 and np.array_equal(out, other[1].astype(np.float32) / 255.0)


def test_make_synthetic_videos_refuses_a_full_folder(tmp_path):
    make_synthetic_videos(tmp_path, count=1, frames=2, width=32, height=32)
    from u2seg.errors import U2SegError

    with pytest.raises(U2SegError, match="not empty"):
        make_synthetic_videos(tmp_path, count=1, frames=2, width=32, height=32)


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"empty.mp4: empty file$"):
        VideoReader(tmp_path / "empty.mp4")
    with pytest.raises(VideoReadError, match=r"nope.mov: no such file$"):
        VideoReader(tmp_path / "nope.mov")


# --------------------------------------------------------------------------- the README's strip


def _checkerboard(height: int, width: int, cell: int = 8) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    board = np.where(light[..., None], 205, 150).astype(np.uint8)
    return np.repeat(board, 3, axis=2)


def test_strip_of_frames_for_the_readme(tmp_path, pretrained_home):
    """docs/screenshots/video-strip.png: original | mask | cutout of three frames of a clip (a
    camera panning and zooming over scikit-image's astronaut), through remove_video with the filter."""
    from skimage import data

    from u2seg.infer import Engine, Predictor
    from u2seg.infer.video import remove_video

    photo = data.astronaut()  # 512×512
    frames = []
    for i in range(6):
        zoom = 1.0 + 0.05 * i
        w, h = int(510 / zoom), int(340 / zoom)
        x, y = 2 + 6 * i, 40 + 4 * i
        frames.append(np.asarray(Image.fromarray(photo[y:y + h, x:x + w]).resize((240, 160), Image.LANCZOS)))
    source = write_input(tmp_path / "clip.mp4", frames)
    shown = []
    predictor = Predictor(weights=pretrained_home / "weights" / "u2netp")
    with Engine(predictor, batch_size=2, workers=2) as engine:
        remove_video(engine, source, tmp_path / "clip.webm", progress=False,
                     on_frame=lambda frame, prob, pixels: shown.append((frame.pixels, prob, pixels)))
    rows = []
    for original, prob, cutout in (shown[0], shown[3], shown[5]):
        mask = np.repeat(np.rint(prob * 255).astype(np.uint8)[..., None], 3, axis=2)
        alpha = cutout[..., 3:4].astype(np.float32) / 255.0
        board = _checkerboard(*cutout.shape[:2])
        over = np.rint(cutout[..., :3] * alpha + board * (1 - alpha)).astype(np.uint8)
        gap = np.full((original.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.hstack([original, gap, mask, gap, over]))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    strip = np.vstack(rows[:-1])
    target = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "video-strip.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(target, optimize=True)
    assert strip.shape[0] > 3 * 160 and np.mean([p.mean() for _, p, _ in shown]) > 0.05


def test_memory_stays_flat_frames_in_flight_are_bounded(tmp_path, engine, monkeypatch):
    """However long the video, at most the engine's window of frames is decoded and not yet written."""
    import u2seg.infer.video as video_module
    from u2seg.infer.video import remove_video

    source = write_input(tmp_path / "long.mp4", clip(frames=40))
    seen = []
    made = []
    original = video_module._Decoding

    class Counting(original):
        def __init__(self, frames):
            super().__init__(frames)
            made.append(self)

    monkeypatch.setattr(video_module, "_Decoding", Counting)
    remove_video(engine, source, tmp_path / "long.webm", progress=False,
                 on_frame=lambda frame, prob, pixels: seen.append(made[0].decoded - (frame.index + 1)))
    assert len(seen) == 40
    assert max(seen) <= engine.window + 1, (max(seen), engine.window)


def test_a_killed_runs_temporary_file_is_removed_by_the_next(tmp_path):
    stale = tmp_path / ".out.webm.0123abcd.tmp"
    stale.write_bytes(b"half a video")
    with VideoWriter(tmp_path / "out.webm", "webm", width=W, height=H, mode="RGB") as writer:
        writer.write(clip(frames=1)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.webm"]


def test_one_video_to_a_named_file(tmp_path, use_pretrained_home, capsys):
    """``clip.mp4 -o cut.webm`` (or .gif …): that file, in its suffix's format, nothing beside it;
    an existing file needs --overwrite; a --video-format that disagrees with the name is refused."""
    source = tmp_path / "shot.mp4"
    write_input(source, clip(frames=4))
    target = tmp_path / "named" / "cut.webm"
    code, err = run_cli([str(source), "-o", str(target)], capsys)
    assert code == 0 and f"wrote {target}" in err, err
    frames, _ = read_all(target)
    assert len(frames) == 4 and sorted(p.name for p in target.parent.iterdir()) == ["cut.webm"]
    before = target.read_bytes()
    code, err = run_cli([str(source), "-o", str(target), "--only-mask"], capsys)
    assert code == 1 and "cut.webm exists (--overwrite replaces it)" in err and target.read_bytes() == before
    code, err = run_cli([str(source), "-o", str(tmp_path / "cut.gif")], capsys)
    assert code == 0 and is_animated_image(tmp_path / "cut.gif"), err
    code, err = run_cli([str(source), "-o", str(tmp_path / "c.webm"), "--video-format", "mov"], capsys)
    assert code == 2 and "--video-format mov does not match the output file c.webm" in err
    assert not (tmp_path / "c.webm").exists()
