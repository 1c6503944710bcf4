"""The generation controller: jobs, versions and results, with no widget in sight.

The window binds widgets to it; it reads what to do from the Document (task, prompt, settings, the
engine's own parameters) and tells the window what to show through signals. One click, end to end:
1. `generate` builds a Request from the document, asks the engine to `check` it, makes sure the
   model is on this computer (or downloads it first, then carries on by itself), and submits a job.
2. Every step arrives as `stepped` (all of them: the progress bar) and the newest picture as
   `preview` (older ones are dropped when the canvas cannot keep up).
3. The result becomes one undo step, or, when several versions were asked for, joins the versions
   the person picks from; a result made for a picture that changed meanwhile is dropped.
4. Cancel sets the job's token; the engine stops within a step and nothing in the document changes.
Engines are imported and their models prepared on the worker thread, never on this one.
"""

from __future__ import annotations

import logging
import random
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from editor import handover
from editor.document import Document
from editor.jobs import Job, JobContext, JobKind, JobRunner
from editor.qtimage import to_qimage
from editor.settings import Settings
from engines import registry
from engines.api import Engine, ModelStatus, Request, Result, SandcastleError, StepCallback, StepPreview, Task, default_model_for
from engines.services import default_model, demo_model, device_summary, download_model, is_offline, model_status, remote_engine, remote_status

log = logging.getLogger(__name__)


MAX_SEED = 2**31 - 1


def history_label(engine: Engine, request: Request) -> str:
    """What the History calls a result: the task and what was asked of it, in the words that task takes
    (a prompt, or the attribute amounts), never a prompt left over from another task."""
    task = request.task.value.capitalize()
    if "prompt" in engine.spec.common and request.prompt:
        return f"{task}: {request.prompt[:40]}"
    if request.task is Task.ATTRIBUTES and request.params.get("attributes"):
        return f"{task}: {request.params['attributes'].replace(',', ', ')[:60]}"
    return task


@dataclass(frozen=True)
class Version:
    """One of several results to choose from; nothing touches the picture before it is accepted."""

    result: Result
    seed: int


def step_handler(context: JobContext) -> StepCallback:
    """The step callback an engine gets from the app (editor.handover.step_handler): on the denoising
    thread it only hands over, to the progress (every step) and to the preview thread (the newest)."""
    return handover.step_handler(context.notify, context.hand_over)


def preview_image(step: StepPreview) -> tuple[QImage, StepPreview] | None:
    """On the engines' hand-over thread: the step's picture made (latents to RGB, scaled, blended) and
    turned into a QImage, with the step's other facts; None for a step without a picture."""
    picture = step.picture()
    return None if picture is None else (to_qimage(picture), replace(step, image=None, render=None))


class GenerationController(QObject):
    engineReady = Signal(str, object)  # task, engine (its spec builds the panel's controls)
    busyChanged = Signal(bool)  # a generation, a slider fit or a download is under way
    stepped = Signal(int, object)  # job id, StepPreview: every step (read its numbers; its picture comes through `preview`)
    preview = Signal(int, QImage, object)  # job id, picture, StepPreview: only the newest
    overlayCleared = Signal()  # the canvas shows the document itself again
    versionShown = Signal(QImage, tuple, tuple)  # pixels, box, offset: a version shown in place
    versionAdded = Signal(object, str)  # thumbnail pixels, label
    versionsCleared = Signal()
    resultApplied = Signal(bool)  # whether the picture grew (uncrop)
    beforeChanged = Signal(object, object)  # the pixels the last result replaced and their box, or None, None
    progressText = Signal(str)  # "Done in 2.1 s", "Cancelled"… for the progress bar
    message = Signal(str)  # shown under Generate, not an error
    error = Signal(str)
    status = Signal(str, int)  # a status bar message and how long it stays (ms)
    downloadProgress = Signal(str, object)  # hub id, DownloadProgress
    downloadFinished = Signal(str, str)  # hub id, folder
    downloadFailed = Signal(str, str)
    downloadCancelled = Signal(str)
    sliderFitted = Signal(str)
    deviceChanged = Signal(str)  # one line: device, precision, memory
    finished = Signal(int, object)  # job id, what it made (a Result, or a fitted slider's file), after it was applied, added or dropped
    failed = Signal(int, str)
    cancelled = Signal(int)

    def __init__(self, document: Document, settings: Settings, model: str | None = None, demo: bool = False,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.document, self.settings = document, settings
        self.model = model  # from the command line: wins over the per-task choice in Models
        self.demo = demo
        self.engines: dict[str, Engine] = {}
        self._remote_summary = ""  # the server's own description, fetched when its engines load (never on this thread)
        self.versions: list[Version] = []
        self.ask_download: Callable[[ModelStatus], bool] = lambda status: False  # the window asks the person
        self.runner = JobRunner("engines", self, prepare=preview_image)  # the device's thread: engines and their models live there
        self.downloads = JobRunner("downloads", self)
        self._versions_made_for = -1  # the document version the versions (and the running job) were made for
        self._batch_seeds: list[int] = []  # seeds of the versions still to make in this batch
        self._batch: tuple[Engine, Request] | None = None  # what the batch makes: only the seed changes between versions
        self._before: tuple[QImage, tuple, int] | None = None  # the last result's old pixels, box and undo index
        self._after_download: tuple[str, Callable[[], Any]] | None = None  # (hub id, what asked for it goes on)
        self._label = ""  # the undo step's name for the versions on offer
        self._shown_version = 0
        self._busy = False
        for runner in (self.runner, self.downloads):
            runner.jobsChanged.connect(self._update_busy)
            runner.failed.connect(self._on_failed)
            runner.cancelled.connect(self._on_cancelled)
        self.runner.notice.connect(self.stepped)  # each step's StepPreview, as the engine made it
        self.runner.newest.connect(self._on_preview)
        self.runner.finished.connect(self._on_finished)
        self.downloads.newest.connect(lambda job_id, progress: self.downloadProgress.emit(*progress))
        self.downloads.finished.connect(self._on_downloaded)
        document.undo_stack.indexChanged.connect(self._forget_stale_before)

    # ---- state ---------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return self.document.generation.get("task") or registry.available()[0]

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def downloading(self) -> str | None:
        """The hub id being downloaded, if any."""
        jobs = self.downloads.jobs
        return jobs[0].data["hub_id"] if jobs else None

    @property
    def generating(self) -> bool:
        """A generation or a slider fit is under way (downloads and engine loads aside)."""
        return any(job.kind in (JobKind.GENERATE, JobKind.FIT_SLIDER) for job in self.runner.jobs)

    def _update_busy(self) -> None:
        busy = self.generating or bool(self.downloads.jobs)
        if busy != self._busy:
            self._busy = busy
            self.busyChanged.emit(busy)

    def params(self, task: str | None = None) -> dict[str, Any]:
        """The engine parameters of `task` as the document holds them, defaults for the rest."""
        task = task or self.task
        engine = self.engines.get(task)
        saved = self.document.task_params(task)
        return {p.name: saved.get(p.name, p.default) for p in engine.spec.params} if engine else saved

    def shutdown(self) -> bool:
        """Cancel everything and stop both threads; True when they ended in time."""
        return all([self.downloads.shutdown(10000), self.runner.shutdown(30000)])

    # ---- engines -------------------------------------------------------------------------------

    def load_engine(self, task: str) -> None:
        """Make the engine for `task` ready: at once when loaded before, else on the worker thread
        (torch and diffusers take seconds to import); answers with engineReady or error."""
        if task in self.engines:
            self.engineReady.emit(task, self.engines[task])
            return
        remote, token = self.settings.remote, self.settings["remote_token"]
        if any(job.kind == JobKind.LOAD_ENGINE and job.data["task"] == task and job.data["remote"] == remote for job in self.runner.jobs):
            return

        def work(context: JobContext) -> Engine:
            if remote:  # the engines run on a Sandcastle server: its spec, and each job, come over the network
                engine = remote_engine(task, remote, token)
                self._remote_summary = remote_status(remote, token)
                return engine
            try:
                engine = registry.get(task)
            except SandcastleError:
                raise
            except Exception as exc:
                log.error("loading the %s engine failed:\n%s", task, traceback.format_exc())
                raise SandcastleError(f"The {task} engine could not be loaded ({exc}).") from exc
            if self.demo and not self.model:  # the tiny random-weight models are written here, off the GUI thread
                for method in [p.choices for p in engine.spec.params if p.name == "method"] or [("",)]:
                    for choice in method:
                        demo_model(task, {"method": choice} if choice else {})
            return engine

        self.runner.submit(JobKind.LOAD_ENGINE, work, task=task, remote=remote)

    def forget_engines(self) -> None:
        """Drop the engines made so far (the device moved between this computer and a server); each task's
        is made again when it is next shown."""
        self.engines.clear()
        self._remote_summary = ""

    def device_summary(self) -> str:
        """The status bar's device line; empty until an engine (and so torch) is loaded."""
        if not self.engines:
            return ""
        if self.settings.remote:
            return self._remote_summary
        return device_summary(self.settings.resolved("device"), self.settings.resolved("precision"))

    def model_for(self, task: str) -> str:
        if self.settings.remote:  # the server resolves names (its presets, its cache, its own folders): never a path of this computer
            return self.settings.model_for(task) or ""
        if self.model:
            return self.model
        if self.demo:
            return demo_model(task, self.params(task))  # written when the engine loaded: only looked up here
        engine = self.engines.get(task)
        if self.settings.model_for(task) or engine is None:
            return self.settings.model_for(task) or default_model(task)
        return default_model_for(engine, self.params(task))  # e.g. edit: InstructPix2Pix or SD 1.5 by method

    # ---- generating ----------------------------------------------------------------------------

    def build_request(self, seed: int | None = None) -> Request:
        """The request from the document: its pixels and layers, and the settings the panel shows from it."""
        g, task, d = self.document.generation, self.task, self.document
        return Request(
            task=Task(task),
            image=d.image.copy(),
            mask=d.mask.copy(),
            prompt=g.get("prompt", "").strip(),
            negative_prompt=g.get("negative", "").strip(),
            guidance_scale=g.get("guidance", 7.5),
            strength=g.get("strength", {}).get(task, 1.0),
            steps=g.get("steps", 25),
            seed=g.get("seed", 0) if seed is None else seed,
            model=self.model_for(task),
            device=self.settings.resolved("device"),
            dtype=self.settings.resolved("precision"),
            memory=self.settings.resolved("memory"),
            compile=bool(self.settings["compile_unet"]),
            allow_pickle=tuple(self.settings["pickle_allowed"]),
            hints=d.hints.copy() if task == "colorize" and d.has_hints else None,
            params=self.params(task),
        )

    def generate(self) -> bool:
        """Start generating (as many versions as the document asks for); False, with the reason
        shown, when it cannot start now."""
        if self.busy:
            return False  # one job at a time; the button is disabled too
        engine = self.engines.get(self.task)
        if engine is None:
            self.error.emit("The engine is still loading; try again in a moment.")
            return False
        if not self.document.has_image:
            self.error.emit("Open a picture first (File → Open, or drop one on the window).")
            return False
        if "seed" in engine.spec.common and not self.document.generation.get("seed_locked"):
            self.document.set_generation(seed=random.randint(0, MAX_SEED))  # a new picture each time, unless the seed is locked
        request = self.build_request()
        try:
            engine.check(request)
        except SandcastleError as exc:
            self.error.emit(str(exc))
            return False
        if not self.ensure_model(self.task, then=self.generate):
            return False
        if self.versions:
            self.discard_versions()  # a new batch replaces versions that were not accepted
        count = int(self.document.generation.get("versions", 1)) if "seed" in engine.spec.common else 1
        self._batch_seeds = [request.seed + k for k in range(count)]
        self._batch = (engine, request)
        self._versions_made_for = self.document.version
        self._submit(engine, request, self._batch_seeds.pop(0), count)
        return True

    def _submit(self, engine: Engine, request: Request, seed: int, count: int) -> None:
        def work(context: JobContext) -> Result:
            return engine.run(replace(request, seed=seed, job_id=context.job_id), step_handler(context), context.token)

        self.runner.submit(JobKind.GENERATE, work, seed=seed, versions=count, label=history_label(engine, request),
                           seeded="seed" in engine.spec.common)

    def cancel(self) -> None:
        """Cancel the running generation (or slider fit), else the download (Cancel, Esc)."""
        if not self.cancel_generation():
            self.downloads.cancel()

    def cancel_generation(self) -> bool:
        """Cancel the running generation or slider fit and the versions still to make; True if there was one."""
        jobs = [job for job in self.runner.jobs if job.kind != JobKind.LOAD_ENGINE]
        self._batch_seeds = []
        for job in jobs:
            job.token.cancel()
        if jobs:
            self.progressText.emit("Cancelling…")
        return bool(jobs)

    def _on_preview(self, job_id: int, prepared: tuple[QImage, StepPreview]) -> None:
        self.preview.emit(job_id, *prepared)

    def _on_finished(self, job: Job, result: Any) -> None:
        if job.kind == JobKind.LOAD_ENGINE:
            if job.data["remote"] != self.settings.remote:  # made for the device the person has since left
                self.load_engine(job.data["task"])
                return
            self.engines[job.data["task"]] = result
            self.engineReady.emit(job.data["task"], result)
            self.deviceChanged.emit(self.device_summary())  # torch is imported by now, so this is cheap
            return
        if job.kind == JobKind.FIT_SLIDER:
            self.sliderFitted.emit(job.data["name"])
            self.progressText.emit(f"Slider {job.data['name']} saved")
            self.status.emit(f"Your slider {job.data['name']} is saved and sits under Your sliders.", 6000)
            self.finished.emit(job.id, result)
            return
        self.overlayCleared.emit()
        if result.info.get("warnings"):
            self.message.emit(" ".join(result.info["warnings"]))  # shown, not an error: the result is still applied
        if self.document.version != self._versions_made_for:
            self._batch_seeds = []
            self.error.emit("The picture changed while generating, so the result was not applied.")
            self.progressText.emit("Discarded")
        elif job.data["versions"] > 1:
            self._label = job.data["label"]
            self.add_version(result, job.data["seed"])
            if self._batch_seeds:
                self._submit(*self._batch, self._batch_seeds.pop(0), job.data["versions"])
            else:
                self.show_version(self._shown_version)
                self.progressText.emit(f"{len(self.versions)} versions: pick one")
                self.status.emit("Click a version to see it on the canvas; Accept keeps it, Discard all drops them.", 8000)
        else:
            self._apply(result, f"{job.data['label']} (seed {job.data['seed']})" if job.data["seeded"] else job.data["label"])
            self.progressText.emit(f"Done in {result.seconds:.1f} s")
            self.status.emit(f"Done in {result.seconds:.1f} s · {result.info.get('device', '')} {result.info.get('dtype', '')}", 6000)
            self.deviceChanged.emit(self.device_summary())
        self.finished.emit(job.id, result)

    def _on_failed(self, job: Job, message: str) -> None:
        if job.kind == JobKind.LOAD_ENGINE:
            self.error.emit(message)
            return
        if job.kind == JobKind.DOWNLOAD:
            self._after_download = None
            self.progressText.emit("Download failed")
            self.error.emit(message)
            self.downloadFailed.emit(job.data["hub_id"], message)
            return
        self.overlayCleared.emit()
        self._batch_seeds = []
        if job.kind == JobKind.FIT_SLIDER:
            message += " Your examples are kept: choose New… under Attributes to change them and try again."
        self.progressText.emit("Failed")
        self.error.emit(message)
        self.failed.emit(job.id, message)

    def _on_cancelled(self, job: Job) -> None:
        if job.kind == JobKind.LOAD_ENGINE:
            return  # only when the app shuts down
        if job.kind == JobKind.DOWNLOAD:
            self._after_download = None
            self.progressText.emit("Download cancelled")
            self.status.emit(f"Download of {job.data['hub_id']} cancelled; it resumes where it stopped next time.", 6000)
            self.downloadCancelled.emit(job.data["hub_id"])
            return
        self.overlayCleared.emit()
        self._batch_seeds = []  # the versions already made stay
        self.progressText.emit("Cancelled")
        self.status.emit("Cancelled; the picture is unchanged.", 4000)
        self.cancelled.emit(job.id)

    def _on_downloaded(self, job: Job, path: str) -> None:
        hub_id = job.data["hub_id"]
        self.status.emit(f"Downloaded {hub_id}", 6000)
        self.progressText.emit("Downloaded")
        self.downloadFinished.emit(hub_id, path)
        if self._after_download is not None and self._after_download[0] == hub_id:
            then, self._after_download = self._after_download[1], None
            then()  # the Generate (or slider fit) that asked for the model goes on

    # ---- own attribute sliders -------------------------------------------------------------------

    def fit_slider(self, name: str, has_faces: list[np.ndarray], lacks_faces: list[np.ndarray]) -> bool:
        """Fit and save an own slider from face crops that have and lack a trait, on the worker thread
        (where the attributes engine's model lives). False, with the reason shown, when it cannot start."""
        engine = self.engines.get("attributes")
        if engine is None or self.busy:
            self.error.emit("Wait for the running job to end, then choose Fit and save again; your examples are kept.")
            return False
        if not self.ensure_model("attributes", then=lambda: self.fit_slider(name, has_faces, lacks_faces)):
            return False
        base = self.build_request()
        params = {**base.params, "region_x": 0, "region_y": 0, "region_size": 0}  # each example is already cropped to its face
        has, lacks = ([replace(base, image=face, mask=None, hints=None, params=params) for face in faces] for faces in (has_faces, lacks_faces))

        def work(context: JobContext) -> Any:
            def progress(done: int, total: int) -> None:
                context.notify(StepPreview(context.job_id, done, total, None, (0, 0, 0, 0)))

            return engine.fit_slider(name, has, lacks, context.token, progress)

        self.runner.submit(JobKind.FIT_SLIDER, work, name=name)
        self.progressText.emit(f"Fitting {name}…")
        return True

    # ---- results and versions --------------------------------------------------------------------

    def _apply(self, result: Result, label: str) -> None:
        """A result onto the picture as one undo step; the old pixels stay at hand for Compare with before."""
        grows = self._grows(result)
        if grows:
            self.document.apply_resized(result.image, result.offset, label)
            self._before = None
        else:
            x, y, w, h = result.box
            before = to_qimage(self.document.image[y : y + h, x : x + w])
            self.document.apply_result(result.image, result.box, label)
            self._before = (before, result.box, self.document.undo_stack.index())
        self._forget_stale_before(self.document.undo_stack.index())
        self.resultApplied.emit(grows)

    def _grows(self, result: Result) -> bool:
        return result.image.shape != self.document.image.shape or tuple(result.offset) != (0, 0)

    def placed(self, result: Result) -> tuple[np.ndarray, tuple, tuple]:
        """(pixels, box, offset) of what a result changes: its box of a same-size picture, or the whole
        grown picture with the old one's offset (uncrop)."""
        if self._grows(result):
            return result.image, (0, 0, result.image.shape[1], result.image.shape[0]), tuple(result.offset)
        x, y, w, h = result.box
        return result.image[y : y + h, x : x + w], tuple(result.box), (0, 0)

    def add_version(self, result: Result, seed: int) -> None:
        self.versions.append(Version(result, seed))
        self.versionAdded.emit(self.placed(result)[0], f"Seed {seed}")

    def show_version(self, index: int) -> None:
        self._shown_version = max(0, index)
        if not 0 <= index < len(self.versions) or self.generating:
            return  # while the batch runs, the canvas shows the next version forming
        pixels, box, offset = self.placed(self.versions[index].result)
        self.versionShown.emit(to_qimage(pixels), box, offset)

    def accept_version(self, index: int) -> None:
        if self.generating:
            self.error.emit("Wait for the versions to finish (or cancel), then accept one.")
            return
        if self.document.version != self._versions_made_for:
            self.error.emit("The picture changed since these versions were made, so they can no longer be applied.")
            return
        version = self.versions[index]
        self._apply(version.result, f"{self._label} (seed {version.seed})")
        self.discard_versions()
        self.progressText.emit(f"Kept the version with seed {version.seed}")

    def discard_versions(self) -> None:
        self.versions.clear()
        self._shown_version = 0
        self.versionsCleared.emit()
        self.overlayCleared.emit()

    def restore_versions(self, versions: list[Version], label: str) -> None:
        """Put back autosaved versions, made for the picture as it is now."""
        self.discard_versions()
        self._versions_made_for, self._label = self.document.version, label
        for version in versions:
            self.add_version(version.result, version.seed)

    def _forget_stale_before(self, index: int) -> None:
        if self._before is not None and self._before[2] != index:
            self._before = None
        self.beforeChanged.emit(*(self._before[:2] if self._before else (None, None)))

    # ---- models ---------------------------------------------------------------------------------

    def ensure_model(self, task: str, then: Callable[[], Any] = lambda: None) -> bool:
        """True when the task's model is ready to load. Otherwise explains why, or (after asking once,
        with size and licence) starts downloading it, and calls `then` (what asked goes on) when it is in."""
        if self.settings.remote:
            return True  # the server has or fetches its models; a missing one comes back as the job's error
        try:
            status = model_status(self.model_for(task), tuple(self.settings["pickle_allowed"]))  # local folders and files: installed
        except SandcastleError as exc:
            self.error.emit(str(exc))
            return False
        if status.installed:
            return True
        if status.kind == "file" and not status.base:
            self.error.emit(status.unusable or f"{status.title} cannot be used.")
            return False
        hub_id = status.hub_to_fetch
        if is_offline():
            self.error.emit(status.unusable if status.base else (
                f"{status.title} is not on this computer and Sandcastle is offline. On a connected machine run "
                f"hf download {hub_id} and copy the Hugging Face cache (~/.cache/huggingface) here, "
                "or choose a local copy in Tools → Models."
            ))
            return False
        # Agreeing to a preset's text encoder and VAE is not agreeing to its transformer too: asked apart.
        consent = f"{hub_id} without transformer" if status.base else hub_id
        if consent not in self.settings["asked_downloads"]:
            if not self.ask_download(status):
                later = "Generate again when you are ready" if status.base else "download it in Tools → Models when you are ready"
                self.error.emit(f"{status.title} is needed to {task}; {later}.")
                return False
            self.settings["asked_downloads"] = self.settings["asked_downloads"] + [consent]
            self.settings.save()
        self._after_download = (hub_id, then)
        self.download(hub_id, status.components)
        return False

    def download(self, hub_id: str, components: tuple[str, ...]) -> bool:
        """Download a hub model with byte progress; False when a download is already under way."""
        if self.downloads.jobs:
            return False
        endpoint = self.settings["hub_endpoint"] or None

        def work(context: JobContext) -> str:
            return download_model(hub_id, tuple(components), lambda progress: context.hand_over((hub_id, progress)), context.token, endpoint)

        self.downloads.submit(JobKind.DOWNLOAD, work, hub_id=hub_id)
        return True

    def cancel_download(self) -> None:
        self.downloads.cancel()
