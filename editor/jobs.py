"""Runs engines on one worker thread and reports back through signals tagged with a job id.

diffusers pipelines are not thread-safe, so there is one worker thread and one job at a time.
Each step's preview is turned into a QImage on the worker thread (QPixmap would not be allowed
there); the GUI thread only swaps pixmaps. Cancelling sets the job's token; the engine stops
within one step. The thread is never terminated: `shutdown` cancels and waits.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, replace
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QImage

from editor.qtimage import to_qimage
from engines import registry
from engines.api import CancelToken, Cancelled, Engine, Request, SandcastleError, StepPreview, download_model

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: int
    engine: Engine | None
    request: Request | None
    token: CancelToken
    work: Callable[[Callable[[StepPreview], None], CancelToken], object] | None = None  # instead of engine.run (fitting a slider)


class _Worker(QObject):
    """Lives on the worker thread; its slot runs one job from start to end."""

    preview = Signal(int, int, int, QImage, object)  # job id, step, total, image, the StepPreview (box, pass, offset, s/step)
    finished = Signal(int, object)  # job id, Result
    failed = Signal(int, str)
    cancelled = Signal(int)
    engineReady = Signal(str, object)
    engineFailed = Signal(str, str)

    @Slot(str)
    def load_engine(self, name: str) -> None:
        """Import an engine here, off the GUI thread: torch and diffusers take seconds to import."""
        try:
            self.engineReady.emit(name, registry.get(name))
        except Exception as exc:
            log.error("loading engine %s failed:\n%s", name, traceback.format_exc())
            self.engineFailed.emit(name, str(exc) if isinstance(exc, SandcastleError) else f"The {name} engine could not be loaded ({exc}).")

    @Slot(object)
    def run_job(self, job: Job) -> None:
        def on_step(step: StepPreview) -> None:
            image = to_qimage(step.image) if step.image is not None else QImage()
            self.preview.emit(job.id, step.step, step.total, image, replace(step, image=None))

        try:
            job.token.raise_if_cancelled()
            result = job.work(on_step, job.token) if job.work else job.engine.run(job.request, on_step, job.token)
        except Cancelled:
            self.cancelled.emit(job.id)
        except SandcastleError as exc:
            self.failed.emit(job.id, str(exc))
        except Exception as exc:  # a bug or an unexpected library error: keep the app alive, log the details
            log.error("job %d failed:\n%s", job.id, traceback.format_exc())
            self.failed.emit(job.id, f"Generation failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            if job.token.cancelled:  # cancel arrived after the last step: still discard
                self.cancelled.emit(job.id)
            else:
                self.finished.emit(job.id, result)


class JobRunner(QObject):
    """Owns the worker thread. `submit` starts a job unless one is running."""

    preview = Signal(int, int, int, QImage, object)
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)
    busyChanged = Signal(bool)
    engineReady = Signal(str, object)
    engineFailed = Signal(str, str)
    _start = Signal(object)
    _load = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("sandcastle-worker")
        self._worker = _Worker()
        self._worker.moveToThread(self._thread)
        self._start.connect(self._worker.run_job)
        self._load.connect(self._worker.load_engine)
        self._worker.engineReady.connect(self.engineReady)
        self._worker.engineFailed.connect(self.engineFailed)
        self._worker.preview.connect(self._forward_preview)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.start()
        self._current: Job | None = None
        self._next_id = 0

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_id(self) -> int | None:
        return None if self._current is None else self._current.id

    def next_job_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def load_engine(self, name: str) -> None:
        """Import the engine for task `name` on the worker thread; answers with engineReady or engineFailed."""
        self._load.emit(name)

    def submit(self, engine: Engine, request: Request) -> bool:
        """Start `request` (its job_id tags every signal). False, and nothing started, when busy."""
        return self._begin(Job(request.job_id, engine, request, CancelToken()))

    def submit_work(self, job_id: int, work: Callable[[Callable[[StepPreview], None], CancelToken], object]) -> bool:
        """Run `work(on_step, token)` on the worker thread (where the engines' models live) as job `job_id`;
        its return value comes back through `finished`. False when busy."""
        return self._begin(Job(job_id, None, None, CancelToken(), work))

    def _begin(self, job: Job) -> bool:
        if self._current is not None:
            return False
        self._current = job
        self.busyChanged.emit(True)
        self._start.emit(job)
        return True

    def cancel(self) -> None:
        if self._current is not None:
            self._current.token.cancel()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel any job and stop the thread; True when it ended within the timeout."""
        self.cancel()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    # ---- back on the GUI thread ---------------------------------------------------------------

    def _is_current(self, job_id: int) -> bool:
        return self._current is not None and self._current.id == job_id

    def _forward_preview(self, job_id: int, step: int, total: int, image: QImage, info: object) -> None:
        if self._is_current(job_id) and not self._current.token.cancelled:
            self.preview.emit(job_id, step, total, image, info)

    def _done(self, job_id: int) -> bool:
        if not self._is_current(job_id):
            return False
        self._current = None
        self.busyChanged.emit(False)
        return True

    def _on_finished(self, job_id: int, result: object) -> None:
        if self._done(job_id):
            self.finished.emit(job_id, result)

    def _on_failed(self, job_id: int, message: str) -> None:
        if self._done(job_id):
            self.failed.emit(job_id, message)

    def _on_cancelled(self, job_id: int) -> None:
        if self._done(job_id):
            self.cancelled.emit(job_id)


class _DownloadWorker(QObject):
    progress = Signal(str, object)  # hub id, DownloadProgress
    finished = Signal(str, str)  # hub id, folder
    failed = Signal(str, str)
    cancelled = Signal(str)

    @Slot(str, object, object, str)
    def run(self, hub_id: str, components: object, token: object, endpoint: str) -> None:
        try:
            path = download_model(hub_id, tuple(components), lambda p: self.progress.emit(hub_id, p), token, endpoint or None)
        except Cancelled:
            self.cancelled.emit(hub_id)
        except SandcastleError as exc:
            self.failed.emit(hub_id, str(exc))
        except Exception as exc:
            log.error("download of %s failed:\n%s", hub_id, traceback.format_exc())
            self.failed.emit(hub_id, f"The download of {hub_id} failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            self.finished.emit(hub_id, path)


class DownloadRunner(QObject):
    """Downloads models on their own thread, one at a time, so a download never blocks generating
    or the window. Cancel takes effect within one received chunk; the partial file is kept to resume."""

    progress = Signal(str, object)
    finished = Signal(str, str)
    failed = Signal(str, str)
    cancelled = Signal(str)
    busyChanged = Signal(bool)
    _start = Signal(str, object, object, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("sandcastle-downloads")
        self._worker = _DownloadWorker()
        self._worker.moveToThread(self._thread)
        self._start.connect(self._worker.run)
        self._worker.progress.connect(self.progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.start()
        self._token: CancelToken | None = None
        self.current: str | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    def start(self, hub_id: str, components: tuple[str, ...], endpoint: str = "") -> bool:
        if self.current is not None:
            return False
        self.current, self._token = hub_id, CancelToken()
        self.busyChanged.emit(True)
        self._start.emit(hub_id, components, self._token, endpoint)
        return True

    def cancel(self) -> None:
        if self._token is not None:
            self._token.cancel()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self.cancel()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    def _done(self) -> None:
        self.current, self._token = None, None
        self.busyChanged.emit(False)

    def _on_finished(self, hub_id: str, path: str) -> None:
        self._done()
        self.finished.emit(hub_id, path)

    def _on_failed(self, hub_id: str, message: str) -> None:
        self._done()
        self.failed.emit(hub_id, message)

    def _on_cancelled(self, hub_id: str) -> None:
        self._done()
        self.cancelled.emit(hub_id)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def describe_progress(title: str, p: object) -> str:
    """"Downloading SD 1.5: 1.2 GB of 2.1 GB · 12.3 MB/s" for a DownloadProgress."""
    return f"Downloading {title}: {human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)} · {human_bytes(p.bytes_per_second)}/s"
