"""Peak graphics memory and steps per second of today's models in each memory mode, as Sandcastle
sets them up (engines.models: off = all on the GPU, balanced = model CPU offload, quantized = the
transformer as an 8-bit Q8_0 copy with model CPU offload, lowest = group offloading; auto = what
Sandcastle chooses from the free memory).

    python -m benchmarks.dit_memory --kind flux2-klein --size real --device cuda --modes off,balanced,lowest \
        [--vram-gb 12] [--side 1024] [--steps 4] --json FILE

Random weights at the released structure ("real": FLUX.2 [klein] 4B, Qwen-Image-Edit 20B, FLUX.1
12B; speed and memory do not depend on the weights), built straight on the device in bfloat16 and
saved to a scratch folder so each mode loads through engines.models exactly as a real download would.
--vram-gb caps what PyTorch may allocate (torch.cuda.set_per_process_memory_fraction), to stand in
for a 12 or 16 GB card on a larger one: a mode that does not fit reports the out-of-memory.

On the CPU, `--size tiny --device cpu` checks the script itself in seconds (memory figures are then RSS).
Each result is written to --json as soon as it is measured, so a run cut short keeps what it found.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

PRIVATE = Path(tempfile.mkdtemp(prefix="sandcastle-dit-bench-"))
for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
    os.environ[variable] = str(PRIVATE / variable.lower())  # never the person's own settings or cache (the 8-bit copies land here)
os.environ["HF_HUB_OFFLINE"] = "1"


def measure(kind: str, folder: str, mode: str, device: str, side: int, steps: int) -> dict:
    import numpy as np
    import torch

    from engines import dit, models
    from engines.api import CancelToken, Request, Task
    from engines.sd import Crop

    models.CACHE.clear()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    purpose = "inpaint"
    loaded = models.load_pipeline(purpose, folder, torch.device(device), torch.bfloat16 if device == "cuda" else torch.float32, memory=mode)
    load_s = time.perf_counter() - started
    picture = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    request = Request(task=Task.INPAINT, image=picture, mask=mask, prompt="a red door", steps=steps, seed=0, model=folder, device=device,
                      guidance_scale=3.5)
    crop = Crop(model_image=picture, model_mask=mask, shown_under=picture, alpha=np.ones((side, side), np.float32), box=(0, 0, side, side))
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    started = last[0] = time.perf_counter()
    dit.generate_crop(loaded=loaded, request=request, params={"resolution": side}, crop=crop, previewer=None, on_step=on_step,
                      cancel=CancelToken())
    total = time.perf_counter() - started
    steady = step_times[1:] or step_times
    result = {"kind": kind, "mode": loaded.memory, "side": side, "steps": steps, "load_s": round(load_s, 2), "run_s": round(total, 2),
              "steps_per_s": round(len(steady) / sum(steady), 3)}
    if device == "cuda":
        result["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    else:
        import resource

        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="flux2-klein", choices=("flux2-klein", "qwen-edit", "flux-fill", "flux-kontext"))
    parser.add_argument("--size", default="tiny", choices=("tiny", "real"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="off,balanced,lowest", help="memory modes, comma-separated: off, balanced, "
                        "quantized (the 8-bit transformer), lowest, auto (reports the mode it chose)")
    parser.add_argument("--vram-gb", type=float, help="cap PyTorch's allocations to this many GB (a smaller card)")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--folder", help="where to write the random-weight model (default: a scratch folder)")
    parser.add_argument("--json", help="append each result here as it is measured")
    args = parser.parse_args()
    import torch

    from engines.testing_dit import write_dit_model

    if args.device == "cuda" and args.vram_gb:
        from engines import models

        total = torch.cuda.get_device_properties(0).total_memory / 1024**3
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_gb / total))
        # The cap is PyTorch's, not the driver's: "auto" asks the driver what is free, so tell it the capped figure.
        models._free_bytes = lambda device: int(args.vram_gb * 1024**3) - torch.cuda.memory_reserved(device)
    folder = Path(args.folder or tempfile.mkdtemp(prefix=f"sandcastle-{args.kind}-"))
    if not (folder / "model_index.json").is_file():
        started = time.perf_counter()
        write_dit_model(folder, args.kind, args.size, device=args.device if args.size == "real" else None,
                        dtype=torch.bfloat16 if args.size == "real" else None)
        print(f"wrote the random-weight {args.kind} ({args.size}) in {time.perf_counter() - started:.0f} s", flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    results = []
    for mode in args.modes.split(","):
        try:
            result = measure(args.kind, str(folder), mode, args.device, args.side, args.steps)
        except Exception as exc:  # an out-of-memory in one mode is a finding, not the end of the run
            result = {"kind": args.kind, "mode": mode, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        result["vram_cap_gb"] = args.vram_gb
        print(json.dumps(result), flush=True)
        results.append(result)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
