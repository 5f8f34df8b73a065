"""Ctrl-C during training: the first finishes the current step, then the trainer saves a checkpoint
and stops; the second stops at once (the trainer then saves nothing if it was inside an update).

Several ranks (torchrun passes Ctrl-C to every one) must stop after the same step: there the first
Ctrl-C only sets :attr:`InterruptHandler.requested`, which the ranks agree on after each update.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

__all__ = ["InterruptHandler"]

log = logging.getLogger(__name__)


class InterruptHandler:
    """SIGINT as the training loop wants it, between :meth:`install` and :meth:`restore`.

    The loop sets :attr:`updating` around each update and checks :attr:`requested` after it; a
    Ctrl-C outside an update, in a single process, raises ``KeyboardInterrupt`` at once."""

    def __init__(self, several_ranks: bool) -> None:
        self.several_ranks = several_ranks
        self.requested = False  # a first Ctrl-C asked to stop after this step
        self.updating = False
        self._previous: Any = None

    def install(self) -> None:
        """Handle SIGINT from now on (in the main thread only: Python runs signal handlers there)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested or not (self.updating or self.several_ranks):
                raise KeyboardInterrupt
            self.requested = True
            log.warning("Ctrl-C: stopping after this step (press again to stop at once)")

        self._previous = signal.signal(signal.SIGINT, handler)

    def restore(self) -> None:
        """Give SIGINT back to the handler that was there before :meth:`install`."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
