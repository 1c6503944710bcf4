"""Loading a single-file checkpoint: time and peak memory, offline, with an empty Hugging Face cache.

Builds a real-structure checkpoint of a family (tests/data/single_file layouts; random float16 weights,
written one tensor at a time), then loads it in a fresh process per precision through the app's own
loader (engines.models.load_pipeline) and reports the load's wall time, the peak resident memory of
that process, and the time to read every weight once (the weights stay memory-mapped after loading).

    python -m benchmarks.single_file [--family sd15] [--keep]

Everything goes in a temporary folder with its own XDG and HF folders; --keep leaves the file there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import torch
from engines import models
path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
started = time.perf_counter()
loaded = models.load_pipeline("inpaint", path, torch.device("cpu"), dtype)
load_s = time.perf_counter() - started
after_load_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
started = time.perf_counter()
total = sum(float(p.float().abs().sum()) for name in ("unet", "vae", "text_encoder") for p in getattr(loaded.pipe, name).parameters())
touch_s = time.perf_counter() - started
print(json.dumps({"load_s": round(load_s, 2), "peak_rss_after_load_gb": round(after_load_gb, 2), "touch_all_weights_s": round(touch_s, 2),
                  "peak_rss_after_touch_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2), "checksum": total}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="sd15")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sandcastle-single-file-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf"), "XDG_CONFIG_HOME": str(folder / "config"),
           "XDG_DATA_HOME": str(folder / "data"), "XDG_CACHE_HOME": str(folder / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    sys.path.insert(0, str(ROOT))
    from engines import testing

    path = folder / f"{args.family}.safetensors"
    started = time.perf_counter()
    testing.write_checkpoint_from_layout(ROOT / "tests" / "data" / "single_file" / f"{args.family}.txt", path, random=True)
    report = {"family": args.family, "file_bytes": path.stat().st_size, "write_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(report), flush=True)
    for dtype in ("float16", "float32"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), dtype], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            print(json.dumps({"dtype": dtype, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        print(json.dumps({"dtype": dtype, **json.loads(out.stdout.strip().splitlines()[-1])}), flush=True)
    if args.keep:
        print(f"kept {path}")
    else:
        path.unlink()


if __name__ == "__main__":
    main()
