"""Cancel a job with SIGTERM/SIGINT (`CancelFlag`), and the exit code of a cancelled job."""

from __future__ import annotations

import signal
import threading
from typing import Any

EXIT_CANCELLED = 3


class CancelFlag:
    """A flag set by SIGTERM/SIGINT (or `request()`) that the trainer polls once per step.

    The first signal only sets the flag, so the trainer can finish the step, save a
    checkpoint and exit with EXIT_CANCELLED; a second signal raises KeyboardInterrupt.
    Use as a context manager to install the handlers and restore the previous ones after.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """True once a cancel was requested."""
        return self._event.is_set()

    def request(self, reason: str = "request") -> None:
        """Ask the job to stop at the next step boundary."""
        self.signal_name = self.signal_name or reason
        self._event.set()

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.request(signal.Signals(signum).name)

    def install(self) -> CancelFlag:
        """Install the signal handlers (main thread only; elsewhere this is a no-op)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> CancelFlag:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
