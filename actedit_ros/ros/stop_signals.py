"""Ctrl-C and SIGTERM as a request to stop cleanly, for the node and the bag tools (no rclpy handler involved).

Within ``with StopOnSignals(on_stop) as stop:`` a SIGINT or SIGTERM sets ``stop.requested`` to the signal's name and
calls ``on_stop()`` instead of raising, so the caller can finish what it was doing (answer waiting callers, close a
bag). A signal that was ignored on entry stays ignored, as ``nohup`` and a shell's ``&`` expect. With
``second_signal_interrupts`` the handlers in place before the block come back at the first signal, so a second one
interrupts the clean-up; otherwise every signal inside the block only requests the stop. Signal handlers can only be
set in the main thread; in any other thread the block changes nothing.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """SIGINT/SIGTERM inside the block: ``requested`` = the signal's name, then ``on_stop()`` (see the module)."""

    def __init__(self, on_stop: Callable[[], None] | None = None, second_signal_interrupts: bool = False):
        self.on_stop = on_stop
        self.second_signal_interrupts = second_signal_interrupts
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                if signal.getsignal(number) != signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def _on_signal(self, number, _frame) -> None:
        self.requested = signal.Signals(number).name
        if self.second_signal_interrupts:
            self._restore()
        if self.on_stop is not None:
            self.on_stop()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __exit__(self, *exc) -> None:
        self._restore()
