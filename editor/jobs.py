"""One serial job runner: a worker thread that runs jobs one at a time, in the order they came.

Engine jobs (loading an engine, generating, fitting a slider) and downloads all run through this one
shape; the app makes one runner for the device the engines use and one for the network, so a
download never holds up the engines' thread (diffusers pipelines are not thread-safe, so there is
never more than one engine job at a time).

A job is a record: an id (unique across runners), a kind, the work and a cancel token. The work
runs as `work(context)` on the worker thread and talks back only through its `JobContext`:
- `notify(payload)`: small news that must all arrive (a step's number), a queued signal each;
- `hand_over(payload)`: the newest of something big (a preview, download progress). Only the newest
  waits: a newer one replaces it, so when the canvas cannot keep up, older previews are dropped,
  never queued. A runner made with `prepare` (the engines' one) has a hand-over thread
  (editor.handover.HandOverThread) that passes the notices on and turns each handed-over payload
  into what the GUI shows (a step's picture: latents to RGB, scaled, blended, made a QImage), so the
  denoising thread only appends to a list and wakes that thread: no Qt call, no picture work.
Every signal carries the job id (those that end a job carry the Job record itself); the GUI side drops what belongs to a job that is no longer waited
for (finished, failed, cancelled) or whose token is set. Cancelling sets the job's token; the
work stops at its next check. The thread is never terminated: `shutdown` cancels and waits.
"""

from __future__ import annotations

import enum
import itertools
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from editor.handover import HandOverThread, Newest
from engines.api import CancelToken, Cancelled, SandcastleError

log = logging.getLogger(__name__)
_ids = itertools.count(1)  # one sequence for every runner, so a job id never means two jobs


class JobKind(enum.Enum):
    LOAD_ENGINE = "load engine"
    GENERATE = "generate"
    FIT_SLIDER = "fit slider"
    DOWNLOAD = "download"


@dataclass
class Job:
    id: int
    kind: JobKind
    work: Callable[["JobContext"], Any]
    token: CancelToken = field(default_factory=CancelToken)
    data: dict[str, Any] = field(default_factory=dict)  # what its owner needs back when it ends (a seed, a slider name…)


class JobContext:
    """What a job's work sees on the worker thread."""

    def __init__(self, job: Job, worker: "_Worker") -> None:
        self.job_id, self.token, self._worker = job.id, job.token, worker

    def notify(self, payload: Any) -> None:
        self._worker.notify(self.job_id, payload)

    def hand_over(self, payload: Any) -> None:
        self._worker.hand_over(self.job_id, self.token, payload)


class _Worker(QObject):
    """Lives on the worker thread; `run` runs one job from start to end."""

    noticed = Signal(int, object)
    handedOver = Signal()
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)

    def __init__(self, name: str, prepare: Callable[[Any], Any] | None) -> None:
        super().__init__()
        self.newest = Newest()  # what the GUI thread takes next
        self.carrier = HandOverThread(name, prepare, self._deliver, self.noticed.emit) if prepare is not None else None

    def notify(self, job_id: int, payload: Any) -> None:
        if self.carrier is not None:
            self.carrier.notify(job_id, payload)
        else:
            self.noticed.emit(job_id, payload)

    def hand_over(self, job_id: int, token: CancelToken, payload: Any) -> None:
        if self.carrier is not None:
            self.carrier.hand_over(job_id, token, payload)
        else:
            self._deliver(job_id, payload)

    def _deliver(self, job_id: int, payload: Any) -> None:
        if self.newest.put((job_id, payload)):  # the GUI thread has taken the last one: wake it once
            self.handedOver.emit()

    def _flush(self) -> None:
        """The job's notices reach the GUI thread before its end does."""
        if self.carrier is not None:
            self.carrier.flush(5.0)

    def stop_hand_over(self, timeout_s: float) -> None:
        if self.carrier is not None:
            self.carrier.stop(timeout_s)

    @Slot(object)
    def run(self, job: Job) -> None:
        try:
            job.token.raise_if_cancelled()  # cancelled while it waited its turn
            result = job.work(JobContext(job, self))
            self._flush()
        except Cancelled:
            self.cancelled.emit(job.id)
        except SandcastleError as exc:
            self.failed.emit(job.id, str(exc))
        except Exception as exc:  # a bug or an unexpected library error: keep the app alive, log the details
            log.error("%s job %d failed:\n%s", job.kind.value, job.id, traceback.format_exc())
            self.failed.emit(job.id, f"The {job.kind.value} job failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            if job.token.cancelled:  # cancel arrived after the last step: still discard
                self.cancelled.emit(job.id)
            else:
                self.finished.emit(job.id, result)


class JobRunner(QObject):
    """Owns one worker thread and the jobs waiting for it. Signals are tagged with the job id."""

    notice = Signal(int, object)  # job id, payload: every one
    newest = Signal(int, object)  # job id, payload: the newest handed over
    finished = Signal(object, object)  # the Job, what its work returned
    failed = Signal(object, str)  # the Job, one sentence for the person
    cancelled = Signal(object)  # the Job
    jobsChanged = Signal()  # a job was submitted or ended
    _start = Signal(object)

    def __init__(self, name: str, parent: QObject | None = None, prepare: Callable[[Any], Any] | None = None) -> None:
        """`prepare`, when given, turns each handed-over payload into what `newest` carries, on a preview thread."""
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName(f"sandcastle-{name}")
        self._worker = _Worker(name, prepare)
        self._worker.moveToThread(self._thread)
        self._start.connect(self._worker.run)
        self._worker.noticed.connect(self._on_notice)
        self._worker.handedOver.connect(self._on_handed_over)
        # Bound methods, not lambdas: a slot of this object runs on the GUI thread (queued), a lambda
        # would run on the worker thread that emits.
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._jobs: dict[int, Job] = {}  # submitted and not yet ended, in order
        self._thread.start()

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    @property
    def running(self) -> bool:
        """Whether the worker thread is still there to run jobs (False after shutdown)."""
        return self._thread.isRunning()

    def submit(self, kind: JobKind, work: Callable[[JobContext], Any], **data: Any) -> Job:
        """Queue `work` as a job of `kind`; it runs after the jobs before it."""
        job = Job(next(_ids), kind, work, data=data)
        self._jobs[job.id] = job
        self.jobsChanged.emit()
        self._start.emit(job)
        return job

    def cancel(self, kind: JobKind | None = None) -> None:
        """Cancel every waiting or running job (of `kind`)."""
        for job in self._jobs.values():
            if kind is None or job.kind == kind:
                job.token.cancel()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel every job and stop the thread; True when it ended within the time-out."""
        self.cancel()
        self._worker.stop_hand_over(timeout_ms / 1000)
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    # ---- back on the GUI thread ---------------------------------------------------------------

    def _live(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and not job.token.cancelled

    def _on_notice(self, job_id: int, payload: Any) -> None:
        if self._live(job_id):
            self.notice.emit(job_id, payload)

    def _on_handed_over(self) -> None:
        newest = self._worker.newest.take()
        if newest is not None and self._live(newest[0]):
            self.newest.emit(*newest)

    def _on_finished(self, job_id: int, result: Any) -> None:
        self._end(job_id, self.finished, result)

    def _on_failed(self, job_id: int, message: str) -> None:
        self._end(job_id, self.failed, message)

    def _on_cancelled(self, job_id: int) -> None:
        self._end(job_id, self.cancelled)

    def _end(self, job_id: int, signal: Any, *payload: Any) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return  # not ours, or already ended
        self.jobsChanged.emit()
        signal.emit(job, *payload)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def describe_progress(title: str, p: object) -> str:
    """"Downloading SD 1.5: 1.2 GB of 2.1 GB · 12.3 MB/s" for a DownloadProgress."""
    return f"Downloading {title}: {human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)} · {human_bytes(p.bytes_per_second)}/s"
