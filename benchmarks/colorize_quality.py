"""Colorize with each model on scikit-image's colour photos turned grey: how colourful the result is
and how far its lightness strays from the photo's, beside the original's own colourfulness.

    python -m benchmarks.colorize_quality --model MODEL [--model MODEL …] [--steps 25] [--side 512] [--json FILE]

MODEL is anything `--model` takes (a preset id, hub id or folder): today's SD colorize (img2img on
the grey picture), FLUX.2 [klein] or Qwen-Image-Edit (asked in words to colour the photo). The
colourfulness is Hasler and Süsstrunk's (2003) M on the RGB result (0 for grey, ~30-60 for ordinary
photos); the L* error is the mean |ΔL*| to the original photo (the engine keeps the photo's own
lightness, so it should be below 1). With random-weight demo models the colours are noise: the
figures mean something only with real weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def colourfulness(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--device")
    parser.add_argument("--json")
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    from engines import imaging, registry
    from engines.api import CancelToken, Request, Task

    engine = registry.get("colorize")
    rows = []
    for name in PHOTOS:
        photo = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize((args.side, args.side), Image.LANCZOS))
        lightness = imaging.lightness(photo)
        grey = imaging.with_lightness(lightness, np.zeros((*lightness.shape, 2)))  # the photo's own L*, no colour
        row = {"photo": name, "original_colourfulness": round(colourfulness(photo), 1)}
        for model in args.model:
            request = Request(task=Task.COLORIZE, image=grey, prompt="", steps=args.steps, seed=0, model=model, device=args.device,
                              strength=0.75)
            engine.check(request)
            result = engine.run(request, lambda step: None, CancelToken())
            row[model] = {"colourfulness": round(colourfulness(result.image), 1),
                          "lightness_error": round(float(np.abs(imaging.lightness(result.image) - imaging.lightness(photo)).mean()), 2),
                          "seconds": round(result.seconds, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
