"""A graceful stop for endless sources: Ctrl-C ends the input, so the flow drains and exits.

Bytewax turns SIGINT into a panic that discards the epoch in progress. Instead the
first Ctrl-C sets this flag; the simulator and a followed file end their input at the
next poll, the dataflow reaches end of input, the last snapshot is published and the
run exits normally. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopFlag", "install_interrupt_handler"]


class StopFlag:
    """Set once when the input should end."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def install_interrupt_handler(flag: StopFlag) -> None:
    """First SIGINT/SIGTERM sets `flag`; a second SIGINT raises KeyboardInterrupt."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
