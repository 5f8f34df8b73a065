"""Finding input images and planning where their outputs go, before any work starts.

Rules: a file named on the command line writes ``OUTDIR/<stem>.<ext>``; a folder is searched
recursively and keeps its sub-folder structure under OUTDIR; a glob behaves like the files it
matches. Two inputs that would write the same output, or an output that would land on an input,
are reported, never overwritten. One picture may also go to a file (``-o cutout.png``, as rembg's
``i``): :func:`plan_file_output`.
"""

from __future__ import annotations

import glob
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import is_url, url_filesystem
from ..image_io import IMAGE_EXTENSIONS
from ..video_read import VIDEO_EXTENSIONS, is_animated_image, is_video_file

__all__ = ["Task", "Plan", "plan_outputs", "plan_file_output", "plan_pairs", "find_images", "video_media",
           "split_videos", "FILE_OUTPUT_FORMATS", "VIDEO_FILE_FORMATS"]

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Task:
    source: Path | str   # a local path, or an fsspec URL (s3://…) as a string
    output: Path


@dataclass
class Plan:
    tasks: list[Task]
    missing: list[str]  # arguments that named nothing
    conflicts: list[str]  # one line each: inputs that would share an output or hit an input
    existing: list[Task]  # outputs already present (skipped unless overwriting)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


#: The suffixes that make ``-o`` a file rather than a folder, and the format each writes: for a
#: still picture, and for a video or an animated image (``png``, a folder of frames, is not a file).
FILE_OUTPUT_FORMATS = {".png": "png", ".webp": "webp"}
VIDEO_FILE_FORMATS = {".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".gif": "gif", ".webp": "webp"}


def plan_file_output(inputs: Sequence[str], output: Path, *, overwrite: bool = False) -> Plan | None:
    """``-o cutout.png`` for one picture, or ``-o clip.webm`` for one video or animated image: the
    output is that file (rembg's ``i``), when ``inputs`` is one such file, ``output`` ends in one of
    its formats (:data:`FILE_OUTPUT_FORMATS`, :data:`VIDEO_FILE_FORMATS`) and is not a folder. None:
    ``output`` is a folder (:func:`plan_outputs`). The plan's conflict is an output that is the
    input, or a picture's output named like a picture that cannot hold it (``cutout.jpg``: no
    alpha); an existing output is set apart unless ``overwrite``."""
    if len(inputs) != 1 or is_url(inputs[0]) or output.is_dir():
        return None
    source = Path(inputs[0])
    if not source.is_file():
        return None
    video = is_video_file(source)
    if not video and not _is_image(source):
        return None
    task = Task(source, output)
    if output.suffix.lower() not in (VIDEO_FILE_FORMATS if video else FILE_OUTPUT_FORMATS):
        if video or not _is_image(output):
            return None
        return Plan([], [], [f"{output}: one picture is written as .png or .webp (or give a folder)"], [])
    if output.resolve() == source.resolve():
        return Plan([], [], [f"{source}: the output would replace the input; choose another name"], [])
    if output.exists() and not overwrite:
        return Plan([], [], [], [task])
    return Plan([task], [], [], [])


# Listed from folders when videos are wanted (GIFs: animated or not; media() tells).
_MEDIA_SUFFIXES = VIDEO_EXTENSIONS | {".gif", ".apng"}


#: ``media(path)``: the output format of a video or animated image (``"webm"`` …), or None for a
#: still image; given to :func:`plan_outputs`, folders list such files with the images.
Media = Callable[[Path], "str | None"]


def video_media(video_format: str | None = None) -> Media:
    """``u2seg remove``'s ``media``: a video writes ``video_format`` (default ``webm``), an
    animated image ``video_format`` (default ``webp``), a still image None."""

    def media(path: Path) -> str | None:
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return video_format or "webm"
        if is_animated_image(path):
            return video_format or "webp"
        return None

    return media


def split_videos(tasks: Iterable[Task]) -> tuple[list[Task], list[Task]]:
    """(image tasks, video tasks): a task whose source is a video or animated image is a video's."""
    images: list[Task] = []
    videos: list[Task] = []
    for task in tasks:
        (videos if is_video_file(task.source) else images).append(task)
    return images, videos


def _expand(argument: str, media: Media | None = None) -> list[tuple[Path, Path]] | None:
    """``(source, output path relative to OUTDIR without suffix)`` pairs, or None if nothing."""
    if is_url(argument):
        return _expand_url(argument)
    path = Path(argument)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and (
            _is_image(p) or (media is not None and p.suffix.lower() in _MEDIA_SUFFIXES)))
        return [(p, p.relative_to(path).with_suffix("")) for p in files]
    if path.is_file():
        return [(path, Path(path.stem))]
    if _GLOB_CHARS & set(argument):
        matches = sorted(Path(p) for p in glob.glob(argument, recursive=True))
        files = [p for p in matches if p.is_file()]
        return [(p, Path(p.stem)) for p in files] or None
    return None


def _expand_url(url: str) -> list[tuple[str, Path]] | None:
    """What ``_expand`` does for an fsspec URL (``s3://bucket/photos/``): the sources stay URLs."""
    fs, root = url_filesystem(url)
    root = root.rstrip("/")
    if _GLOB_CHARS & set(root):
        found = sorted(p for p in fs.glob(root) if fs.isfile(p))
        pairs = [(fs.unstrip_protocol(p), Path(Path(p).stem)) for p in found if _is_image(Path(p))]
    elif fs.isdir(root):
        found = sorted(p for p in fs.find(root) if _is_image(Path(p)))
        pairs = [(fs.unstrip_protocol(p), Path(p[len(root) + 1:]).with_suffix("")) for p in found]
    elif fs.isfile(root):
        pairs = [(url, Path(Path(root).stem))]
    else:
        pairs = []
    return pairs or None


def find_images(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The image files that ``inputs`` (files, folders, globs) name, once each, and the
    arguments that named nothing."""
    found: dict[Path, Path] = {}
    missing: list[str] = []
    for argument in inputs:
        pairs = _expand(argument)
        if pairs is None:
            missing.append(argument)
        for source, _ in pairs or []:
            found.setdefault(source if is_url(source) else source.resolve(), source)
    return list(found.values()), missing


def plan_outputs(inputs: Sequence[str], outdir: Path, *, fmt: str = "png",
                 overwrite: bool = False, media: Media | None = None) -> Plan:
    """Expand ``inputs`` and plan ``OUTDIR/<relative path>.<fmt>`` for each image found. With
    ``media``, folders list videos and GIFs too, and a file for which ``media`` names a format
    gets that suffix instead (two inputs with one stem are a conflict whatever their formats)."""
    pairs: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for argument in inputs:
        found = _expand(argument, media)
        if found is None:
            missing.append(argument)
        else:
            pairs.extend(found)
    plan = plan_pairs(pairs, outdir, fmt=fmt, overwrite=overwrite, media=media)
    plan.missing = missing
    return plan


def plan_pairs(pairs: Sequence[tuple[Path, Path]], outdir: Path, *, fmt: str = "png",
               overwrite: bool = False, media: Media | None = None) -> Plan:
    """Plan outputs for ``(source, output path relative to outdir without suffix)`` pairs: two
    sources sharing an output, or an output that is a source, are conflicts (never written);
    existing outputs are set apart unless ``overwrite``."""
    # The same file named twice (a folder and a glob inside it) is one task, not a conflict.
    unique: dict[Path, tuple[Path, Path]] = {}
    for source, rel in pairs:
        if is_url(source):  # fsspec URLs stay strings (a Path would fold their "//")
            unique.setdefault(source, (source, Path(rel)))
        else:
            unique.setdefault(Path(source).resolve(), (Path(source), Path(rel)))

    by_output: dict[Path, list[Path]] = defaultdict(list)  # by the output's path without suffix
    suffix: dict[Path, str] = {}
    for source, rel in unique.values():
        suffix[source] = (media(source) if media is not None and not is_url(source) else None) or fmt
        by_output[outdir / rel].append(source)
    input_paths = set(unique)
    tasks, conflicts, existing = [], [], []
    for stem, sources in by_output.items():
        outputs = sorted({str(stem.with_name(f"{stem.name}.{suffix[s]}")) for s in sources})
        output = Path(outputs[0])
        if len(sources) > 1:
            conflicts.append(f"{', '.join(map(str, sources))} would all write {' and '.join(outputs)}")
        elif output.resolve() in input_paths:
            conflicts.append(f"{sources[0]}: its output {output} is an input; choose another output folder")
        elif output.exists() and not overwrite:
            existing.append(Task(sources[0], output))
        else:
            tasks.append(Task(sources[0], output))
    return Plan(tasks, [], conflicts, existing)
