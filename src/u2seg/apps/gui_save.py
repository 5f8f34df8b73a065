"""The picture window's saving (:mod:`.gui`): the current output, or every listed picture's into
a folder (in a worker, through the engine), and the dialogs that ask where.

:class:`SavingMixin` is a part of :class:`~u2seg.apps.gui.MainWindow`, kept apart because saving
is its own concept; it uses the window's state (``_rendered``, ``_current``, ``_entries``,
``_places``, ``_jobs``, ``_segment_pool``, ``last_save_report``) and methods (``model``,
``options()``, ``_predictor()``, ``show_error()``, ``_clear_error()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..image_encode import OUTPUT_FORMATS, save_image
from ..infer.job_types import Report
from ..infer.files import Plan, plan_pairs
from .gui_jobs import describe_error

__all__ = ["SaveReport", "SavingMixin"]

# What "save all" did: the engine's report (written files; one line per failure, planning problems
# first: conflicts, existing files kept).
SaveReport = Report


class SavingMixin:
    """Save the current output, or all of them (see the module docstring)."""

    def save_current(self, path: str | Path) -> Path | None:
        """Save the current output (PNG or WebP, from the suffix; none → .png). Never writes over
        an opened picture. Returns the path written, or None (the error is shown)."""
        if self._rendered is None or self._current is None:
            self.show_error("nothing to save yet")
            return None
        target = Path(path)
        if target.suffix.lower().lstrip(".") not in OUTPUT_FORMATS:
            target = target.with_name(target.name + ".png")
        inputs = {p.resolve() for p in self._entries}
        if target.resolve() in inputs:
            self.show_error(f"{target}: that is an opened picture; choose another name")
            return None
        try:
            save_image(self._rendered.output, target)
        except (OSError, ValueError) as exc:
            self.show_error(f"{target}: {describe_error(exc)}")
            return None
        self._clear_error()
        self.statusBar().showMessage(f"Saved {target}")
        return target

    def save_all(self, folder: str | Path, *, fmt: str = "png", overwrite: bool = False,
                 wait: bool = False) -> None:
        """Save every listed picture's output into ``folder`` with the current settings
        (``<name>.png``; folders keep their sub-folders). Runs in a worker; pictures are never
        overwritten, and existing outputs only with ``overwrite``. The outcome is shown in the
        window and kept in :attr:`last_save_report`."""
        if not self._entries:
            self.show_error("nothing to save: open pictures first")
            return
        plan = self.plan_saves(folder, fmt=fmt, overwrite=overwrite)
        problems = list(plan.conflicts) + [f"{t.output}: exists, kept" for t in plan.existing]
        model, options = self.model, self.options()
        self.statusBar().showMessage(f"Saving {len(plan.tasks)} pictures to {folder}…")
        self.last_save_report = None

        def work() -> SaveReport:
            from ..infer.engine import run_job
            from ..infer.job_types import Item
            from ..infer.removal import RemovalJob

            report = SaveReport(failed=list(problems))
            items = [Item(task.source, str(task.source), task.output) for task in plan.tasks]
            if items:  # the engine: decoding, network and encoding overlap, in input order
                done = run_job(self._predictor(model), items, RemovalJob(options, fmt), progress=False)
                report.written.extend(done.written)
                report.failed.extend(done.failed)
            return report

        # the network pool: one thread uses the predictor
        self._jobs.start(self._segment_pool, work, self._saved_all, self._save_all_failed)

    def plan_saves(self, folder: str | Path, *, fmt: str = "png", overwrite: bool = False) -> Plan:
        """Where :meth:`save_all` would write: ``folder/<name>.<fmt>`` for a picture opened as a
        file, ``folder/<sub-folders>/<name>.<fmt>`` for one found in an opened folder. Two
        pictures that would share an output, or an output that is an opened picture, are
        conflicts (not written); existing outputs are listed apart unless ``overwrite``."""
        pairs = [(picture, self._places[picture].with_suffix("")) for picture in self._entries]
        return plan_pairs(pairs, Path(folder), fmt=fmt, overwrite=overwrite)

    def _saved_all(self, report: SaveReport) -> None:
        self.last_save_report = report
        text = f"Saved {len(report.written)} pictures"
        if report.failed:
            self.show_error(f"{text}; {len(report.failed)} not saved: " + "; ".join(report.failed))
        else:
            self._clear_error()
            self.statusBar().showMessage(text)

    def _save_all_failed(self, message: str, _context: Any) -> None:
        self.last_save_report = SaveReport(failed=[message])
        self.show_error(message)

    # ------------------------------------------------------------------ dialogs
    def _ask_save_current(self) -> None:
        if self._current is None:
            return
        suggestion = str(self._current.with_name(self._current.stem + "-cutout.png"))
        path, _ = QFileDialog.getSaveFileName(self, "Save the output", suggestion, "PNG (*.png);;WebP (*.webp)")
        if path:
            self.save_current(path)

    def _ask_save_all(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save all outputs into a folder")
        if not folder:
            return
        plan = self.plan_saves(folder)
        overwrite = False
        if plan.existing:
            answer = QMessageBox.question(
                self, "Replace files?", f"{len(plan.existing)} outputs already exist in {folder}. Replace them?")
            overwrite = answer == QMessageBox.StandardButton.Yes
        self.save_all(folder, overwrite=overwrite)
