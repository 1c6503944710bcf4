"""What the "quantized" memory mode costs the first time: writing the 8-bit (Q8_0) copy of a real-size
transformer, and reading it back through diffusers' GGUF support. Random weights at the released
structure (the time does not depend on the weights), on the CPU, in a private cache folder.

    python -m benchmarks.q8_copy --kind flux2-klein
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

PRIVATE = Path(tempfile.mkdtemp(prefix="sandcastle-q8-bench-"))
for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
    os.environ[variable] = str(PRIVATE / variable.lower())  # never the person's own cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="flux2-klein", choices=("flux2-klein", "qwen-edit", "flux-fill", "flux-kontext"))
    args = parser.parse_args()
    import diffusers
    import torch

    from engines import models

    config = json.loads((models.transformer_config_folder(args.kind) / "transformer" / "config.json").read_text())
    started = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.no_grad():
        transformer = getattr(diffusers, models.TRANSFORMER_CLASSES[args.kind]).from_config(config)
    torch.set_default_dtype(torch.float32)
    built = time.perf_counter() - started
    full = sum(t.numel() * t.element_size() for t in transformer.state_dict().values())
    predicted = models.q8_0_bytes(transformer)
    path = PRIVATE / "transformer.Q8_0.gguf"
    started = time.perf_counter()
    models.write_q8_0(transformer, path)
    written = time.perf_counter() - started
    del transformer
    started = time.perf_counter()
    loaded = getattr(diffusers, models.TRANSFORMER_CLASSES[args.kind]).from_single_file(
        str(path), config=str(models.transformer_config_folder(args.kind)), subfolder="transformer", torch_dtype=torch.bfloat16,
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch.bfloat16), local_files_only=True)
    read = time.perf_counter() - started
    assert models.is_quantized(loaded)
    print(json.dumps({"kind": args.kind, "cpu_threads": torch.get_num_threads(), "bfloat16_gb": round(full / 1024**3, 2),
                      "q8_0_gb": round(path.stat().st_size / 1024**3, 2), "predicted_gb": round(predicted / 1024**3, 2),
                      "build_s": round(built, 1), "write_s": round(written, 1), "read_s": round(read, 1)}))


if __name__ == "__main__":
    main()
