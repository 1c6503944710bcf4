"""Inpainting speed: Sandcastle's engine against plain diffusers as a person would call it, the
previews' cost, and what the app does on the denoising thread.

    python -m benchmarks [--size small|sd15|sdxl] [--kind inpaint|sdxl-inpaint] [--steps 10] [--repeats 3]
                         [--device cuda] [--dtype float16] [--compile] [--memory auto] [--vram-limit-gb 8] [--json out.json]

Interleaved in one run, on the same model, inputs, DDIM scheduler and seed:
- plain diffusers: `AutoPipelineForInpainting.from_pretrained(folder, torch_dtype=…).to(device)`, called
  with the picture and mask at the model's own size, nothing else;
- the engine with previews off, and with linear previews, each run as the app runs it: on a job
  runner's worker thread with the app's own step callback and preview thread (editor.jobs and
  editor.handover; where Qt is not installed, as on the GPU machine, the same hand-over around a
  plain thread, without the QImage conversion).
The figures the issue asks for: `engine_over_plain`, `engine_previews_over_plain` (goal ≤ 1.03 for
both) and `preview_callback_ms` (how long the step callback holds the denoising thread per step;
goal ≤ 0.3 ms at 512² on the 2-core CPU). Each figure is printed and written to the JSON file as soon
as it is measured. The whole run uses settings, data and cache folders of its own (never the
person's), and every phase has a time limit (--phase-limit). The model has random weights (speed does
not depend on them) and the structure named by --size (engines/testing.py; "sd15" and "sdxl" are the
real UNet layouts, checked by parameter count in tests/unit/test_speed_paths.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRIVATE = Path(tempfile.mkdtemp(prefix="sandcastle-bench-"))
for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
    os.environ[variable] = str(PRIVATE / variable.lower())  # never the person's own settings, autosave or cache
os.environ["HF_HOME"] = str(PRIVATE / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DEVICE, DTYPE, COMPILE, KIND, MEMORY, LIMIT = "cpu", "float32", False, "inpaint", None, 600.0  # set from the command line


class Figures:
    """Every figure printed and written to the JSON file the moment it is measured."""

    def __init__(self, path: str | None) -> None:
        self.path, self.values = Path(path) if path else None, {}

    def __setitem__(self, key: str, value) -> None:
        self.values[key] = round(value, 4) if isinstance(value, float) else value
        print(f"{key:<36} {self.values[key]}", flush=True)
        if self.path is not None:
            self.path.write_text(json.dumps(self.values, indent=2))


def photo_and_mask(size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[size * 140 // 512 : size * 380 // 512, size * 150 // 512 : size * 360 // 512] = 255
    return image, mask


def sync() -> None:
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


# ---- the three ways of running, each timed on a worker thread ------------------------------------


class Worker:
    """The app's own job runner (engines' thread + preview thread), driven from this script."""

    def __init__(self) -> None:
        from PySide6.QtWidgets import QApplication

        from editor.generation import preview_image
        from editor.jobs import JobRunner

        self.app = QApplication.instance() or QApplication([])
        self.runner = JobRunner("bench", prepare=preview_image)
        self.previews_shown: list[float] = []
        self.ended: dict[int, tuple[str, object]] = {}
        self.runner.newest.connect(lambda job_id, prepared: self.previews_shown.append(time.perf_counter()))
        self.runner.finished.connect(lambda job, result: self.ended.setdefault(job.id, ("result", result)))
        self.runner.failed.connect(lambda job, message: self.ended.setdefault(job.id, ("error", message)))
        self.runner.cancelled.connect(lambda job: self.ended.setdefault(job.id, ("error", "cancelled")))

    def run(self, work):
        """Run `work(context)` as a job and return what it returned; TimeoutError past the phase limit."""
        from editor.jobs import JobKind

        from PySide6.QtCore import QEventLoop, QTimer

        # Wait in an event loop, as the app's GUI thread does (a polling loop would compete with the
        # worker thread for the interpreter lock).
        loop = QEventLoop()
        for signal in (self.runner.finished, self.runner.failed, self.runner.cancelled):
            signal.connect(loop.quit)
        QTimer.singleShot(int(LIMIT * 1000), loop.quit)
        job = self.runner.submit(JobKind.GENERATE, work)
        loop.exec()
        for signal in (self.runner.finished, self.runner.failed, self.runner.cancelled):
            signal.disconnect(loop.quit)
        if job.id not in self.ended:
            job.token.cancel()
            raise TimeoutError(f"a phase took longer than {LIMIT:.0f} s")
        kind, value = self.ended.pop(job.id)
        if kind == "error":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        self.runner.shutdown()


class PlainWorker:
    """Where Qt is not installed (the GPU machine): the same hand-over and preview thread
    (editor.handover) around a plain worker thread; only the QImage conversion is left out."""

    class Context:
        def __init__(self, job_id: int, carrier) -> None:
            from engines.api import CancelToken

            self.job_id, self.token, self._carrier = job_id, CancelToken(), carrier

        def notify(self, payload) -> None:
            self._carrier.notify(self.job_id, payload)

        def hand_over(self, payload) -> None:
            self._carrier.hand_over(self.job_id, self.token, payload)

    def __init__(self) -> None:
        from editor.handover import HandOverThread

        self.previews_shown: list[float] = []
        self.carrier = HandOverThread("bench", lambda step: step.picture(), lambda job_id, picture: self.previews_shown.append(time.perf_counter()),
                                      lambda job_id, notice: None)
        self.jobs = 0

    def run(self, work):
        self.jobs += 1
        context, out = self.Context(self.jobs, self.carrier), {}
        thread = threading.Thread(target=lambda: out.setdefault("result", work(context)), name="sandcastle-bench")
        thread.start()
        thread.join(LIMIT)
        if thread.is_alive():
            context.token.cancel()
            raise TimeoutError(f"a phase took longer than {LIMIT:.0f} s")
        if "result" not in out:
            raise RuntimeError("the phase failed (see above)")
        return out["result"]

    def close(self) -> None:
        self.carrier.stop(10)


def make_worker():
    try:
        import PySide6  # noqa: F401
    except ImportError:
        return PlainWorker()
    return Worker()


def plain_pipeline(model: str):
    """diffusers as a person calls it: from_pretrained in the chosen dtype, moved to the device, DDIM."""
    import torch
    from diffusers import AutoPipelineForInpainting, DDIMScheduler

    # The test models carry no safety checker or its image processor (nor does the engine run one).
    pipe = AutoPipelineForInpainting.from_pretrained(model, torch_dtype=getattr(torch, DTYPE), safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False).to(DEVICE)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_plain(worker: Worker, pipe, image, mask, steps: int) -> float:
    import torch
    from PIL import Image

    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)  # the model's own resolution, as the engine uses

    def work(context) -> float:
        sync()
        start = time.perf_counter()
        pipe(prompt="a bench", image=Image.fromarray(image), mask_image=Image.fromarray(mask), height=size, width=size,
             num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(1), output_type="np")
        sync()
        return time.perf_counter() - start

    return worker.run(work)


def engine_request(model: str, image, mask, steps: int, preview: str):
    from engines.api import Request, Task

    return Request(Task.INPAINT, image, mask, prompt="a bench", steps=steps, seed=1, model=model, device=DEVICE, dtype=DTYPE, compile=COMPILE,
                   memory=MEMORY, params={"scheduler": "DDIM", "preview": preview, "padding": 4096})  # padding: the whole picture, as the plain call


def time_engine(worker: Worker, model: str, image, mask, steps: int, preview: str) -> tuple[float, dict, float | None]:
    """(seconds, the result's timings, seconds from start to the first preview on the GUI thread)."""
    from editor.handover import step_handler
    from engines import registry

    engine = registry.get("inpaint")
    start = [0.0]

    def work(context):
        sync()
        start[0] = time.perf_counter()
        on_step = step_handler(context.notify, context.hand_over)  # the app's own step callback
        result = engine.run(engine_request(model, image, mask, steps, preview), on_step, context.token)
        sync()
        return time.perf_counter() - start[0], result.info["timings"]

    worker.previews_shown.clear()
    seconds, timings = worker.run(work)
    first = worker.previews_shown[0] - start[0] if worker.previews_shown else None
    return seconds, timings, first


# ---- other figures -----------------------------------------------------------------------------


def syncs_per_step(model: str, image, mask, steps: int) -> float | None:
    """Host↔device synchronisations per step of the denoising thread during an engine run with linear
    previews (CUDA's sync debug mode warns at each one). The callback keeps the steps and renders
    nothing here: in the app the pictures are rendered on the hand-over thread, whose syncs do not hold
    the denoising thread."""
    import warnings

    import torch

    from engines import registry
    from engines.api import CancelToken

    if not DEVICE.startswith("cuda"):
        return None
    kept: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            registry.get("inpaint").run(engine_request(model, image, mask, steps, "linear"), kept.append, CancelToken())
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message).lower() for w in caught) / steps


def cancel_latency_s(model: str, image, mask, steps: int) -> float:
    """From pressing Cancel to the engine having stopped. Cancel is pressed from another thread half
    a step after step 2 ended, as a person's click lands in the middle of a step."""
    from engines import registry
    from engines.api import CancelToken, Cancelled

    token, pressed, ends = CancelToken(), [], []

    def press() -> None:
        pressed.append(time.perf_counter())
        token.cancel()

    def on_step(step) -> None:
        ends.append(time.perf_counter())
        if step.step == 2:
            threading.Timer((ends[1] - ends[0]) / 2, press).start()

    try:
        registry.get("inpaint").run(engine_request(model, image, mask, steps, "linear"), on_step, token)
    except Cancelled:
        pass
    sync()
    return time.perf_counter() - pressed[0]


def attention_slicing_ratio(worker: Worker, pipe, image, mask, steps: int) -> float:
    """Plain pipeline time with attention slicing ÷ without, on this device: whether slicing helps here."""
    plain = time_plain(worker, pipe, image, mask, steps)
    pipe.enable_attention_slicing()
    try:
        sliced = time_plain(worker, pipe, image, mask, steps)
    finally:
        pipe.disable_attention_slicing()
    return sliced / plain


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e3 if sys.platform != "darwin" else peak / 1e6


def gui_stall(model: str, image, mask, steps: int) -> dict:
    """Longest gap between ticks of a 5 ms timer on the GUI thread while the real window generates."""
    from PIL import Image
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    import main
    from editor.settings import Settings

    picture = PRIVATE / "photo.png"
    Image.fromarray(image).save(picture)
    settings = Settings.load()
    settings["device"], settings["precision"], settings["compile_unet"], settings["autosave_seconds"] = DEVICE, DTYPE, COMPILE, 0
    settings.save()
    win = main.build([str(picture), "--model", model])
    win.files.confirm_discard = lambda: True
    win.show()
    deadline = time.monotonic() + LIMIT
    while not win.panel.generate.isEnabled():
        QApplication.processEvents()
        time.sleep(0.001)
        if time.monotonic() > deadline:
            raise TimeoutError("the window's engine did not load in time")
    win.document.mask[:] = mask
    win.panel.steps.setValue(steps)
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    done = []
    win.generation.finished.connect(lambda *a: done.append(1))
    win.generation.failed.connect(lambda job, msg: done.append(msg))
    win.generation.cancelled.connect(lambda job: done.append("cancelled"))
    timer.start()
    if not win.generation.generate():
        raise RuntimeError(f"the window did not generate: {win.panel.message.text()}")
    deadline = time.monotonic() + LIMIT
    while not done and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.001)
    timer.stop()
    win.shutdown()
    win.close()
    if not done:
        raise TimeoutError("the window's generation did not finish in time")
    return {"longest_gui_stall_ms": max(gaps), "p99_gui_gap_ms": float(np.percentile(gaps, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=("tiny", "small", "sd15", "sdxl"))
    parser.add_argument("--kind", default=None, choices=("inpaint", "sdxl-inpaint"), help="default: sdxl-inpaint with --size sdxl, else inpaint")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), float16 (GPU default) or bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet in the engine and in plain diffusers alike")
    parser.add_argument("--memory", default=None, choices=("auto", "off", "balanced", "lowest"), help="low-memory mode (default auto)")
    parser.add_argument("--vram-limit-gb", type=float, help="CUDA: allow the process only this much graphics memory, and let "
                                                              "the automatic low-memory mode choose for that much (the SDXL 8 GB check)")
    parser.add_argument("--skip", default="", help="comma-separated phases to leave out: slicing, gui, cancel")
    parser.add_argument("--phase-limit", type=float, default=600, help="seconds any one phase may take")
    parser.add_argument("--json", help="write the figures here, each as soon as it is measured")
    args = parser.parse_args()

    import torch

    global DEVICE, DTYPE, COMPILE, KIND, MEMORY, LIMIT
    DEVICE, COMPILE, MEMORY, LIMIT = args.device, args.compile, args.memory, args.phase_limit
    KIND = args.kind or ("sdxl-inpaint" if args.size == "sdxl" else "inpaint")
    DTYPE = args.dtype or ("float16" if DEVICE.startswith("cuda") else "float32")
    skip = set(filter(None, args.skip.split(",")))
    figures = Figures(args.json)
    figures["date"] = time.strftime("%Y-%m-%d %H:%M")
    figures["device"] = torch.cuda.get_device_name() if DEVICE.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    figures["torch"], figures["dtype"], figures["compile"], figures["kind"], figures["size"] = torch.__version__, DTYPE, COMPILE, KIND, args.size
    figures["steps"], figures["repeats"] = args.steps, args.repeats

    from engines.testing import write_model

    model = str(write_model(PRIVATE / "model", KIND, args.size))
    import diffusers

    figures["diffusers"] = diffusers.__version__
    figures["unet_parameters_millions"] = round(sum(p.numel() for p in diffusers.UNet2DConditionModel.from_pretrained(model, subfolder="unet").parameters()) / 1e6, 1)
    native = int(json.loads((Path(model) / "unet" / "config.json").read_text())["sample_size"]) * 8
    image, mask = photo_and_mask(native)
    figures["resolution"] = f"{native}×{native}"
    if args.vram_limit_gb and DEVICE.startswith("cuda"):
        from engines import models

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_limit_gb * 1e9 / total))
        on_disk = sum(f.stat().st_size for f in Path(model).rglob("*.safetensors"))  # float32 on disk
        MEMORY = models.choose_memory_mode("auto", torch.device(DEVICE), on_disk * (4 if DTYPE == "float32" else 2) // 4,
                                           int(args.vram_limit_gb * 1e9), "sdxl" if KIND.startswith("sdxl") else "sd")
        figures["vram_limit_gb"], figures["memory_mode"] = args.vram_limit_gb, MEMORY

    worker = make_worker()
    figures["qt"] = isinstance(worker, Worker)
    started = time.perf_counter()
    pipe = plain_pipeline(model)
    if COMPILE:
        pipe.unet = torch.compile(pipe.unet, fullgraph=True, dynamic=False)  # as the engine compiles it
    time_plain(worker, pipe, image, mask, 2)  # first call: allocation (and the compile)
    figures["plain_first_run_s (load + compile)"] = time.perf_counter() - started
    started = time.perf_counter()
    time_engine(worker, model, image, mask, 2, "off")
    figures["engine_first_run_s (load + compile)"] = time.perf_counter() - started
    if DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    plain, off, linear, callback, first_preview, own, redecodes = [], [], [], [], [], [], 0
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits all three alike
        plain.append(time_plain(worker, pipe, image, mask, args.steps))
        seconds, timings, _ = time_engine(worker, model, image, mask, args.steps, "off")
        off.append(seconds)
        own.append(timings["own_work_s"])
        seconds, timings, first = time_engine(worker, model, image, mask, args.steps, "linear")
        linear.append(seconds)
        callback.append(timings["callback_ms_median"])
        first_preview.append(first)
        redecodes += timings["float32_redecodes"]
    p, o, lin = statistics.median(plain), statistics.median(off), statistics.median(linear)
    figures["plain_diffusers_s"], figures["engine_previews_off_s"], figures["engine_linear_previews_s"] = p, o, lin
    figures["runs_s (plain, off, linear)"] = [[round(v, 3) for v in runs] for runs in (plain, off, linear)]  # the spread behind the medians
    figures["steps_per_s_plain"], figures["steps_per_s_engine"] = args.steps / p, args.steps / o
    figures["steps_per_s_engine_previews"] = args.steps / lin
    figures["engine_over_plain"] = o / p
    figures["engine_previews_over_plain"] = lin / p
    figures["preview_callback_ms"] = statistics.median(callback)
    figures["engine_own_work_s"] = statistics.median(own)
    figures["float32_redecodes"] = redecodes
    if all(f is not None for f in first_preview):
        figures["time_to_first_preview_s"] = statistics.median(first_preview)
    figures["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 1e9 if DEVICE.startswith("cuda") else None
    figures["host_device_syncs_per_step"] = syncs_per_step(model, image, mask, args.steps)
    if "cancel" not in skip:
        cancel_s = statistics.median(cancel_latency_s(model, image, mask, max(args.steps, 4)) for _ in range(3))
        figures["cancel_latency_s"], figures["cancel_latency_in_steps"] = cancel_s, cancel_s / (p / args.steps)
    if "slicing" not in skip:
        figures["attention_slicing_time_ratio"] = attention_slicing_ratio(worker, pipe, image, mask, args.steps)
    if "gui" not in skip and isinstance(worker, Worker):
        for key, value in gui_stall(model, image, mask, args.steps).items():
            figures[key] = value
    figures["peak_ram_mb"] = peak_rss_mb()
    worker.close()


if __name__ == "__main__":
    main()
