"""Inpainting benchmarks: Sandcastle's engine against the bare diffusers pipeline, the cost of the
per-step previews, and the longest stall of the GUI event loop while a generation runs.

    python -m benchmarks [--size small|sd15] [--steps 10] [--repeats 3] [--device cuda] [--dtype float16] [--compile] [--json out.json]

Every figure is measured in this one run, on the same model, inputs, scheduler and seed; the
ratios are what to compare across machines. The model has random weights (speed does not depend
on them) and the structure named by --size (see engines/testing.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def photo_and_mask() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    image = np.ascontiguousarray(data.astronaut())  # 512×512
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[140:380, 150:360] = 255
    return image, mask


DEVICE, DTYPE, COMPILE, KIND, MEMORY = "cpu", "float32", False, "inpaint", None  # set from the command line


def sync() -> None:
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def engine_request(model: str, image, mask, steps: int, preview: str):
    from engines.api import Request, Task

    return Request(Task.INPAINT, image, mask, prompt="a bench", steps=steps, seed=1, model=model, device=DEVICE, dtype=DTYPE, compile=COMPILE,
                   memory=MEMORY, params={"scheduler": "DDIM", "preview": preview, "padding": 512})  # padding: the whole picture, as the bare call


def time_engine(model: str, image, mask, steps: int, preview: str) -> tuple[float, list[float]]:
    from engines import registry
    from engines.api import CancelToken

    engine = registry.get("inpaint")
    stamps: list[float] = []
    sync()
    start = time.perf_counter()
    engine.run(engine_request(model, image, mask, steps, preview), lambda s: stamps.append(time.perf_counter()), CancelToken())
    sync()
    return time.perf_counter() - start, [t - start for t in stamps]


def syncs_per_step(model: str, image, mask, steps: int) -> float | None:
    """Host↔device synchronisations per step during an engine run with linear previews (CUDA's sync
    debug mode warns at each one). The preview copy is one per step by design."""
    import warnings

    import torch

    if not DEVICE.startswith("cuda"):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            time_engine(model, image, mask, steps, "linear")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message).lower() for w in caught) / steps


def cancel_latency_s(model: str, image, mask, steps: int) -> float:
    """From pressing Cancel to the engine having stopped. Cancel is pressed from another thread half
    a step after step 2 ended, as a person's click lands in the middle of a step."""
    import threading

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


def time_bare(model: str, image, mask, steps: int) -> float:
    import torch
    from diffusers import DDIMScheduler
    from PIL import Image

    from engines import models

    pipe = models.load_pipeline("inpaint", model, torch.device(DEVICE), getattr(torch, DTYPE), MEMORY, compile=COMPILE).pipe
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)  # the model's own resolution, as the engine uses
    sync()
    start = time.perf_counter()
    pipe(prompt="a bench", image=Image.fromarray(image), mask_image=Image.fromarray(mask), height=size, width=size,
         num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(1), output_type="np")
    sync()
    return time.perf_counter() - start


def attention_slicing_ratio(model: str, image, mask, steps: int) -> float:
    """Bare pipeline time with attention slicing ÷ without, on this device: whether slicing helps here."""
    import torch

    from engines import models

    pipe = models.load_pipeline("inpaint", model, torch.device(DEVICE), getattr(torch, DTYPE), MEMORY, compile=COMPILE).pipe
    plain = time_bare(model, image, mask, steps)
    pipe.enable_attention_slicing()
    try:
        sliced = time_bare(model, image, mask, steps)
    finally:
        pipe.disable_attention_slicing()
    return sliced / plain


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e3 if sys.platform != "darwin" else peak / 1e6


def preview_cost_ms(repeats: int = 200) -> float:
    """The linear preview's own cost per step, timed in isolation (whole-run differences are within
    the noise of a shared machine): latents → RGB, then composed over a 512×512 crop."""
    import torch

    from engines import preview

    previewer = preview.LinearPreview("sd", torch.device(DEVICE), getattr(torch, DTYPE))
    latents = torch.randn(1, 4, 64, 64, device=DEVICE, dtype=getattr(torch, DTYPE))
    base = np.zeros((512, 512, 3), np.uint8)
    alpha = np.ones((512, 512), np.float32)
    start = time.perf_counter()
    for _ in range(repeats):
        preview.compose(previewer(latents), base, alpha)
    return (time.perf_counter() - start) / repeats * 1000


def gui_stall(model: str, steps: int) -> dict:
    """Longest gap between ticks of a 5 ms timer on the GUI thread while the real window generates."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    import main

    app = QApplication.instance() or QApplication([])
    image, mask = photo_and_mask()
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(image).save(Path(tmp) / "photo.png")
        win = main.build([str(Path(tmp) / "photo.png"), "--model", model])
    win.settings["device"], win.settings["precision"], win.settings["compile_unet"] = DEVICE, DTYPE, COMPILE
    win.files.confirm_discard = lambda: True
    win.show()
    while not win.panel.generate.isEnabled():
        app.processEvents()
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
    timer.start()
    win.generation.generate()
    while not done:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    win.shutdown()
    win.close()
    return {"longest_stall_ms": max(gaps), "p99_gap_ms": float(np.percentile(gaps, 99)), "ticks": len(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=("tiny", "small", "sd15"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), float16 (GPU default) or bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (compile time reported apart)")
    parser.add_argument("--kind", default="inpaint", choices=("inpaint", "sdxl-inpaint"), help="sdxl-inpaint goes with --size sdxl")
    parser.add_argument("--memory", default=None, choices=("auto", "off", "balanced", "lowest"), help="low-memory mode (default auto)")
    parser.add_argument("--vram-limit-gb", type=float, help="CUDA: allow the process only this much graphics memory, and let "
                                                              "the automatic low-memory mode choose for that much (the SDXL 8 GB check)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import torch

    global DEVICE, DTYPE, COMPILE, KIND, MEMORY
    DEVICE, COMPILE, KIND, MEMORY = args.device, args.compile, args.kind, args.memory
    DTYPE = args.dtype or ("float16" if DEVICE.startswith("cuda") else "float32")

    from engines.testing import write_model

    image, mask = photo_and_mask()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(write_model(Path(tmp) / "model", KIND, args.size))
        if args.vram_limit_gb and DEVICE.startswith("cuda"):
            from engines import models

            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_limit_gb * 1e9 / total))
            on_disk = sum(f.stat().st_size for f in Path(model).rglob("*.safetensors"))  # float32 on disk
            MEMORY = models.choose_memory_mode("auto", torch.device(DEVICE), on_disk * (4 if DTYPE == "float32" else 2) // 4,
                                               int(args.vram_limit_gb * 1e9), "sdxl" if KIND.startswith("sdxl") else "sd")
        unet_params = sum(p.numel() for p in __import__("diffusers").UNet2DConditionModel.from_pretrained(model, subfolder="unet").parameters())
        started = time.perf_counter()
        time_bare(model, image, mask, 2)  # warm-up: load, allocate, first-call costs (and the compile, with --compile)
        warmup_s = time.perf_counter() - started
        time_engine(model, image, mask, 2, "off")
        if DEVICE.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        bare, engine_off, engine_linear, first_preview = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all three alike
            bare.append(time_bare(model, image, mask, args.steps))
            engine_off.append(time_engine(model, image, mask, args.steps, "off")[0])
            seconds, stamps = time_engine(model, image, mask, args.steps, "linear")
            engine_linear.append(seconds)
            first_preview.append(stamps[0])
        syncs = syncs_per_step(model, image, mask, args.steps)
        cancel_s = statistics.median(cancel_latency_s(model, image, mask, max(args.steps, 4)) for _ in range(3))
        vram = torch.cuda.max_memory_allocated() / 1e9 if DEVICE.startswith("cuda") else None
        slicing = attention_slicing_ratio(model, image, mask, args.steps)
        stall = gui_stall(model, args.steps)
        preview_ms = preview_cost_ms()

    b, off, lin = statistics.median(bare), statistics.median(engine_off), statistics.median(engine_linear)
    figures = {
        "device": DEVICE if not DEVICE.startswith("cuda") else torch.cuda.get_device_name(), "dtype": DTYPE, "compile": COMPILE,
        "torch_threads": torch.get_num_threads(), "size": args.size, "unet_parameters_millions": round(unet_params / 1e6, 1),
        "kind": KIND, "memory_mode": MEMORY or "auto", "vram_limit_gb": args.vram_limit_gb,
        "steps": args.steps, "resolution": "model's own", "repeats": args.repeats,
        "bare_pipeline_s": round(b, 3), "engine_previews_off_s": round(off, 3), "engine_linear_previews_s": round(lin, 3),
        "seconds_per_step_bare": round(b / args.steps, 3),
        "engine_over_bare": round(off / b, 3), "linear_preview_overhead": round(lin / off - 1, 4),
        "linear_preview_ms_per_step": round(preview_ms, 2), "linear_preview_share_of_step": round(preview_ms / 1000 / (b / args.steps), 4),
        "steps_per_s_bare": round(args.steps / b, 3), "steps_per_s_engine": round(args.steps / off, 3),
        "time_to_first_preview_s": round(statistics.median(first_preview), 3),
        "cancel_latency_s": round(cancel_s, 3), "cancel_latency_in_steps": round(cancel_s / (b / args.steps), 2),
        "first_run_s (load + compile)": round(warmup_s, 1),
        "attention_slicing_time_ratio": round(slicing, 3),
        "host_device_syncs_per_step": syncs,
        "peak_ram_mb": round(peak_rss_mb()), "peak_vram_gb": None if vram is None else round(vram, 2),
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in stall.items()},
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
