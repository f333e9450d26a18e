"""The goal node's prediction thread: one low-priority daemon thread that runs predictions one at a time.

Why not a ``concurrent.futures.ThreadPoolExecutor``: the interpreter joins every pool thread at exit, so a node told
to stop (Ctrl-C) during a prediction would sit until the prediction finished, up to a minute for a large model on
CPU. Here the node cancels a running prediction instead: :meth:`PredictionWorker.cancel_on_forward` raises
:class:`PredictionCancelled` from the next forward call of the model's modules (each denoising step), and
:meth:`PredictionWorker.shutdown` waits for the thread to end. A process must not exit while the thread is still
inside torch (libtorch aborts: "terminate called without an active exception"). No ROS imports.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from concurrent.futures import Future
from typing import Callable

PREDICTION_NICE = 10  # how much lower the prediction thread's CPU priority is than the callbacks'


def lower_thread_priority() -> None:
    """Raise this thread's nice value by PREDICTION_NICE (Linux: per thread). Unprivileged processes cannot lower it
    again, so it is only called on a thread that runs nothing but predictions."""
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + PREDICTION_NICE))
        except OSError:  # not permitted (e.g. a seccomp profile): predictions run at normal priority
            pass


class PredictionCancelled(Exception):
    """Raised inside a prediction that was cancelled (the node is shutting down)."""


class PredictionWorker:
    """Runs submitted calls in order on one daemon thread at lower CPU priority (threads it starts, such as torch's,
    inherit the priority on Linux). :meth:`submit` returns a ``concurrent.futures.Future``."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[tuple[Future, Callable, tuple, dict] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        if self._closed:
            raise RuntimeError("the prediction worker is shut down")
        future: Future = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def cancel_on_forward(self, modules, should_cancel: Callable[[], str | None]) -> list:
        """Make every forward call of ``modules`` (torch nn.Modules) on this worker's thread raise
        PredictionCancelled once ``should_cancel()`` returns a reason. Returns the hook handles (``.remove()``)."""
        def hook(_module, _inputs):
            reason = should_cancel()
            if reason is not None and threading.current_thread() is self._thread:
                raise PredictionCancelled(reason)
        return [module.register_forward_pre_hook(hook) for module in modules]

    def shutdown(self, wait_seconds: float = 0.0) -> bool:
        """Cancel queued calls, let the thread end after the current one and wait up to ``wait_seconds`` for that.
        Returns True when the thread has ended."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)
        self._thread.join(wait_seconds)
        return not self._thread.is_alive()

    def _run(self) -> None:
        lower_thread_priority()
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(err)
