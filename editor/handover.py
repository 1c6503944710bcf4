"""Handing a step over from the denoising thread without doing its work there. No Qt in this module:
the job runner builds on it, and the benchmark uses it as it is on machines without Qt.

- `Newest` keeps only the newest item: a newer one replaces one not yet taken, so a slow taker
  drops old previews instead of queueing them.
- `HandOverThread` passes a job's notices on and prepares the newest handed-over payload (a step's
  picture: latents to RGB, scaled, blended) on a thread of its own.
- `step_handler` is the step callback the engines get from the app: every step's facts to `notify`,
  the step itself to `hand_over`; nothing is made on the denoising thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from engines.api import CancelToken, StepCallback, StepPreview

log = logging.getLogger(__name__)


class Newest:
    """A slot for one item: `put` replaces what was not taken yet and says whether the slot was empty."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Any = None

    def put(self, item: Any) -> bool:
        with self._lock:
            was_empty, self._item = self._item is None, item
        return was_empty

    def take(self) -> Any:
        with self._lock:
            item, self._item = self._item, None
        return item


class HandOverThread:
    """A thread of its own that carries on what a job's worker thread hands over, so that thread never
    waits on Qt or on picture work: every notice, in order, goes to `on_notice(job_id, payload)`; the
    newest handed-over payload of a job whose token is not set goes through `prepare(payload)` (a
    step's picture: latents to RGB, scaled, blended) to `deliver(job_id, prepared)` unless None.

    (Measured: a queued Qt signal emitted from the denoising thread made the step callback take
    0.30 ms at 512² on the 2-core CPU, against 0.12 ms when this thread emits it: the emit lets other
    threads take the interpreter lock, and the denoising thread then waits to get it back.)"""

    def __init__(self, name: str, prepare: Callable[[Any], Any], deliver: Callable[[int, Any], None],
                 on_notice: Callable[[int, Any], None]) -> None:
        self._prepare, self._deliver, self._on_notice = prepare, deliver, on_notice
        self._wake = threading.Condition()
        self._notices: list[tuple[int, Any]] = []
        self._waiting: tuple[int, CancelToken, Any] | None = None
        self._busy = False  # passing notices on (flush waits for this too)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"sandcastle-{name}-hand-over", daemon=True)
        self._thread.start()

    def notify(self, job_id: int, payload: Any) -> None:
        with self._wake:
            self._notices.append((job_id, payload))
            self._wake.notify_all()

    def hand_over(self, job_id: int, token: CancelToken, payload: Any) -> None:
        with self._wake:
            self._waiting = (job_id, token, payload)  # one not yet prepared is dropped
            self._wake.notify_all()

    def flush(self, timeout_s: float) -> None:
        """Wait until every notice so far is passed on (before a job's end is announced after them)."""
        with self._wake:
            self._wake.wait_for(lambda: not self._notices and not self._busy or self._stopping, timeout_s)

    def stop(self, timeout_s: float) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._notices or self._waiting is not None or self._stopping)
                if self._stopping:
                    return
                notices, self._notices = self._notices, []
                waiting, self._waiting = self._waiting, None
                self._busy = True
            self._pass_on(notices, waiting)  # its locals (a step's tensors) go when it returns

    def _pass_on(self, notices: list[tuple[int, Any]], waiting: tuple[int, CancelToken, Any] | None) -> None:
        """The notices first (a job's end waits for these, never for a picture being made),
        then the newest payload. A failure is logged: it must stop neither the job nor this thread."""
        try:
            for job_id, payload in notices:
                self._on_notice(job_id, payload)
        except Exception:
            log.error("passing on a notice failed:\n%s", traceback.format_exc())
        finally:
            with self._wake:
                self._busy = False
                self._wake.notify_all()
        if waiting is None or waiting[1].cancelled:
            return
        job_id, _, payload = waiting
        try:
            prepared = self._prepare(payload)
            if prepared is not None:
                self._deliver(job_id, prepared)
        except Exception:
            log.error("preparing a preview of job %d failed:\n%s", job_id, traceback.format_exc())


def step_handler(notify: Callable[[Any], None], hand_over: Callable[[Any], None]) -> StepCallback:
    """The step callback an engine gets. It runs on the denoising thread, so it makes nothing: the
    step's facts go to `notify` (every step: the progress), the step itself to `hand_over` (the newest
    is prepared elsewhere)."""

    def on_step(step: StepPreview) -> None:
        notify(step)  # its picture (if any) is ignored there: the progress reads the numbers
        if step.image is not None or step.render is not None:
            hand_over(step)

    return on_step
