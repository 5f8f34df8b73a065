"""Watch folders (``u2seg remove --watch IN -o OUT``): images that appear anywhere under IN, in
new sub-folders too, become tasks once they are complete, and each is done once per content and
settings (the job's manifest decides, as for a rerun).

A file is taken when its size and mtime have not changed for ``settle`` seconds, or at once when
the system says a writer closed it (inotify's close-after-write, through ``watchdog``). Events
from ``watchdog`` wake the scanner; without it, the folder is polled every ``poll`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..image_io import IMAGE_EXTENSIONS
from .files import Task, plan_pairs
from .manifest import Manifest

__all__ = ["watch_tasks", "DEFAULT_SETTLE_S", "DEFAULT_POLL_S"]

log = logging.getLogger(__name__)

DEFAULT_SETTLE_S = 1.0
DEFAULT_POLL_S = 1.0


def _images(root: Path, skip: Path | None) -> Iterator[tuple[Path, os.stat_result]]:
    """Image files under ``root`` (hidden files, temporaries and the output folder left out)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if skip is None or path.resolve() != skip:
                    stack.append(path)
            elif entry.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                try:
                    yield path, entry.stat()
                except OSError:
                    continue


class _Wakeup:
    """Wakes the scanner when something changes under the folder (watchdog), and remembers the
    files a writer has closed; a plain timer when watchdog is not installed."""

    def __init__(self, root: Path) -> None:
        self.event = threading.Event()
        self.closed: set[str] = set()
        self._lock = threading.Lock()
        self.observer = None
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.info("watchdog is not installed: polling %s", root)
            return
        wakeup = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's event
                if event.event_type == "closed" and not event.is_directory:
                    with wakeup._lock:
                        wakeup.closed.add(os.path.abspath(event.src_path))
                wakeup.event.set()

        self.observer = Observer()
        self.observer.schedule(Handler(), str(root), recursive=True)
        self.observer.start()

    def was_closed(self, path: Path) -> bool:
        with self._lock:
            return str(path.absolute()) in self.closed

    def forget(self, path: Path) -> None:
        with self._lock:
            self.closed.discard(str(path.absolute()))

    def wait(self, seconds: float) -> None:
        self.event.wait(seconds)
        self.event.clear()

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)


def watch_tasks(root: Path, outdir: Path, manifest: Manifest, *, fmt: str, stop: threading.Event,
                settle: float = DEFAULT_SETTLE_S, poll: float = DEFAULT_POLL_S, overwrite: bool = False,
                on_skip: Callable[[str], None] | None = None) -> Iterator[Task]:
    """Tasks for the complete images under ``root``, as they come, until ``stop`` is set. Each
    (content, settings) is yielded once: what the manifest says is done is not yielded again,
    and a file yielded in this run comes back only when it changes."""
    root, skip = Path(root), Path(outdir).resolve()
    wakeup = _Wakeup(root)
    seen: dict[Path, tuple[int, int, float]] = {}      # path -> size, mtime_ns, since (monotonic)
    taken: dict[Path, tuple[int, int]] = {}            # path -> size, mtime_ns when yielded
    told: set[str] = set()
    try:
        while not stop.is_set():
            now = time.monotonic()
            ready: list[tuple[Path, Path]] = []
            for path, stat in _images(root, skip):
                facts = (stat.st_size, stat.st_mtime_ns)
                if taken.get(path) == facts:
                    continue
                size, mtime, since = seen.get(path, (-1, -1, now))
                if (size, mtime) != facts:
                    seen[path] = (*facts, now)
                    if not wakeup.was_closed(path) or stat.st_size == 0:
                        continue
                elif now - since < settle and not wakeup.was_closed(path):
                    continue
                ready.append((path, path.relative_to(root).with_suffix("")))
                taken[path] = facts
                wakeup.forget(path)
            if ready:
                plan = plan_pairs(ready, outdir, fmt=fmt, overwrite=True)
                for line in plan.conflicts:
                    if on_skip is not None and line not in told:
                        told.add(line)
                        on_skip(line)
                decision = manifest.decide(plan.tasks, overwrite=overwrite)
                for task in decision.not_ours:
                    line = f"{task.output} exists and was not written by this job (use --overwrite to replace)"
                    if on_skip is not None and line not in told:
                        told.add(line)
                        on_skip(line)
                yield from decision.run
            wakeup.wait(min(poll, settle / 2) if seen.keys() - taken.keys() else poll)
    finally:
        wakeup.close()
