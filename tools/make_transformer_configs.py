"""Write resources/transformers/<kind>/transformer/config.json: the configurations that single-file and
GGUF diffusion-transformer files are loaded with, so nothing is fetched from the hub for them.

The values are those of the released repositories' transformer/config.json (kept in
engines.testing_dit.REAL, where the random-weight models of real structure are built from them):
black-forest-labs/FLUX.2-klein-4B, Qwen/Qwen-Image-Edit-2511, black-forest-labs/FLUX.1-Fill-dev (384
input channels: latents, masked picture and mask; 64 out) and black-forest-labs/FLUX.1-Kontext-dev
(the FLUX.1 [dev] transformer's shape). Each is written by the diffusers class itself, so every
entry the class takes is there. engines.models reads a file's depth and widths from its shapes
(engines.checkpoints.transformer_structure) and takes the rest from here.

    python tools/make_transformer_configs.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "resources" / "transformers"


def main() -> None:
    import diffusers
    from accelerate import init_empty_weights

    from engines.models import TRANSFORMER_CLASSES
    from engines.testing_dit import REAL

    configs = {
        "flux2-klein": REAL["flux2-klein"]["transformer"],
        "qwen-edit": REAL["qwen-edit"]["transformer"],
        "flux-fill": dict(REAL["flux1"]["transformer"], in_channels=384, out_channels=64),
        "flux-kontext": REAL["flux1"]["transformer"],
    }
    shutil.rmtree(ROOT, ignore_errors=True)
    for kind, values in configs.items():
        with init_empty_weights():
            model = getattr(diffusers, TRANSFORMER_CLASSES[kind])(**values)
        folder = ROOT / kind / "transformer"
        folder.mkdir(parents=True)
        model.save_config(str(folder))
        print(folder / "config.json")


if __name__ == "__main__":
    main()
