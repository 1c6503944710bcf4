"""Attribute sliders: move a face along learned directions (smile, age, hair…) with DiffAE.

Top to bottom:
1. The face. With alignment "face" (the default): dlib finds the faces, the one inside the square the
   person dragged (else the largest) is aligned as FFHQ was (align.py) and warped to the model's size
   (256 for FFHQ-256). With "square": the dragged square, or the whole picture, scaled to that size.
2. Encode: z_sem from the semantic encoder, x_T by the official deterministic DDIM inversion
   conditioned on z_sem (sampling.py; 250 steps as in the paper). Both are cached per face and model,
   so moving a slider only renders. Encoding steps are reported as progress.
3. Move z_sem along the classifier's unit directions (normalised space, see sampling.move).
4. Render with the official DDIM decoding (100 steps as in the paper), a preview per step, and paste
   back through the face's quad (or the feathered square); pixels outside stay bit-identical.

Own sliders: `fit_slider` fits a direction from faces marked as having or lacking a trait
(directions.py); saved sliders sit in the `directions_folder` (by default `directions` in Sandcastle's
data folder, see folders.py) and are used by name like the 40.

Model files: a folder with `autoencoder.safetensors` and `classifier.safetensors`, made from the
official checkpoints with `sandcastle convert-diffae` (see MISSING below).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from engines import imaging, models, preview
from engines.api import (CancelToken, EngineSpec, InputError, ModelUnavailable, ParamSpec, Request, Result, StepCallback, StepPreview,
                         Task, check_common)
from engines.diffae import align, directions, sampling
from engines.folders import own_sliders_folder
from engines.diffae.model import FFHQ256, DiffAE, config_from_json

ATTRIBUTES = tuple(resources.files("resources").joinpath("celeba_attributes.txt").read_text().split())
MISSING = (
    "DiffAE weights are not installed. Download the ffhq256_autoenc and ffhq256_autoenc_cls checkpoints (last.ckpt) from the links "
    "in the README of github.com/phizaz/diffae, convert them with: sandcastle convert-diffae ffhq256_autoenc/last.ckpt "
    "autoencoder.safetensors and sandcastle convert-diffae ffhq256_autoenc_cls/last.ckpt classifier.safetensors, put both in one folder "
    "and choose that folder for Attributes in Tools → Models (or pass --model FOLDER)."
)

AMOUNT_LIMIT = 2.0  # four times the strongest change the paper shows; beyond it faces dissolve


SPEC = EngineSpec(
    id="attributes",
    title="Attributes",
    tasks=(Task.ATTRIBUTES,),
    default_model="",
    common=(),  # no prompt, guidance, strength, seed or shared steps: the picture's own codes drive the decoding
    params=(
        ParamSpec("attributes", str, "", "Attributes", f"NAME=AMOUNT pairs, comma-separated, e.g. Smiling=0.3,Young=-0.2 (amounts from "
                  f"{-AMOUNT_LIMIT:g} to {AMOUNT_LIMIT:g}; ±0.5 is already strong).", panel=False),
        ParamSpec("alignment", str, "face" if align.available() else "square", "Alignment", "face: find the face (the one inside the square you drag, else the largest) and "
                  "align it as the model was trained (FFHQ: eyes level, fixed size); square: edit the dragged square as it is.",
                  choices=("face", "square")),
        ParamSpec("region_x", int, 0, "Region x", "Left edge of the square face region.", 0, 100000, 1, panel=False),
        ParamSpec("region_y", int, 0, "Region y", "Top edge of the square face region.", 0, 100000, 1, panel=False),
        ParamSpec("region_size", int, 0, "Region size", "Side of the square face region; 0 uses the whole picture.", 0, 100000, 1,
                  special_value="Whole picture", panel=False),
        # The paper's manipulation encodes with 250 DDIM steps and renders with 100; 50 and 20 is a faster
        # setting that keeps less of the picture's detail. Only counts with an even stride over 1000 exist.
        ParamSpec("inversion_steps", int, 250, "Encoding steps", "DDIM steps that find the picture's noise code: the paper uses 250; "
                  "fewer (e.g. 50) is faster and keeps less detail. Done once per face; moving a slider only renders.", 2, 1000, 1),
        ParamSpec("render_steps", int, 100, "Rendering steps", "DDIM steps that draw the edited face: the paper uses 100; "
                  "20 is a faster setting.", 2, 1000, 1),
        ParamSpec("feather", int, 12, "Feather radius", "Soft edge of the pasted region, in pixels.", 0, 256, 1),
        ParamSpec("directions_folder", str, "", "Own sliders folder", "Where your own sliders are kept; empty means Sandcastle's data folder."),
    ),
)


def parse_attributes(text: str, names: tuple[str, ...] = ATTRIBUTES) -> dict[int, float]:
    amounts: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in names:
            close = [n for n in names if n.lower() == name.strip().lower()]
            hint = f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(names[:6])}…"
            raise InputError(f"Unknown attribute {name.strip()!r}{hint}")
        try:
            amount = float(value)
        except ValueError:
            raise InputError(f"The amount for {name.strip()} must be a number, not {value!r}.") from None
        if not math.isfinite(amount) or abs(amount) > AMOUNT_LIMIT:  # nan/inf would turn the whole face black
            raise InputError(f"The amount for {name.strip()} must be a number from {-AMOUNT_LIMIT:g} to {AMOUNT_LIMIT:g}, not {value.strip()}.")
        amounts[names.index(name.strip())] = amount
    return amounts


class AttributesEngine:
    spec = SPEC

    def __init__(self) -> None:
        self._loaded: dict[tuple, tuple] = {}
        self._codes: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # region → (z_sem, x_T)
        self._found: tuple[str, list[align.Face]] | None = None  # (picture digest, the faces in it)

    def check(self, request: Request) -> None:
        check_common(request, self.spec)
        p = self.spec.values(request.params)
        parse_attributes(p["attributes"], ATTRIBUTES + directions.slider_names(own_sliders_folder(p)))
        if p["alignment"] == "face" and not align.available():
            raise InputError(align.MISSING)
        sampling.timesteps(p["inversion_steps"])  # refuses a count the official spacing cannot make, naming the nearest
        sampling.timesteps(p["render_steps"])
        h, w = request.image.shape[:2]
        if p["region_size"] and (p["region_x"] + p["region_size"] > w or p["region_y"] + p["region_size"] > h):
            raise InputError(f"The face region {p['region_x']},{p['region_y']} of side {p['region_size']} goes outside the {w}×{h} picture.")
        folder = Path(request.model or "")
        if not request.model or not (folder / "autoencoder.safetensors").is_file() or not (folder / "classifier.safetensors").is_file():
            raise ModelUnavailable(MISSING)

    def _load(self, folder: str, device: torch.device, dtype: torch.dtype):
        key = (folder, str(device), str(dtype))
        if key not in self._loaded:
            from safetensors.torch import load_file

            config_file = Path(folder) / "config.json"
            try:
                config = config_from_json(config_file.read_text(encoding="utf-8"), str(config_file)) if config_file.is_file() else FFHQ256
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ModelUnavailable(f"The DiffAE folder cannot be used: {exc}") from None
            model = DiffAE(config)
            try:
                model.load_state_dict(load_file(str(Path(folder) / "autoencoder.safetensors")), strict=True)
                classifier = load_file(str(Path(folder) / "classifier.safetensors"))
            except Exception as exc:
                raise ModelUnavailable(f"The DiffAE files in {folder} do not fit the model ({str(exc).splitlines()[0][:200]}).") from None
            model = model.to(device, dtype).eval()
            classifier = {k: v.to(device, dtype) for k, v in classifier.items()}
            self._loaded = {key: (model, classifier)}  # one DiffAE at a time
        return self._loaded[key]

    def _faces(self, image: np.ndarray) -> list[align.Face]:
        """The faces in a picture, remembered for the last picture: moving a slider does not search again."""
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if self._found is None or self._found[0] != digest:
            self._found = (digest, align.find_faces(image))
        return self._found[1]

    def _prepare(self, request: Request):
        """The loaded model and classifier, the part of the picture the edit may change (box), the face's
        alignment (None for a plain square), the face as the model sees it, and that as a tensor."""
        p = self.spec.values(request.params)
        device = models.pick_device(request.device)
        dtype = models.pick_dtype(device, request.dtype) if request.dtype else torch.float32  # DiffAE was trained in fp32
        model, classifier = self._load(request.model, device, dtype)
        size = model.cfg.image_size
        h, w = request.image.shape[:2]
        region = (p["region_x"], p["region_y"], p["region_size"], p["region_size"]) if p["region_size"] else None
        if p["alignment"] == "face":  # as the model was trained: FFHQ's alignment of the face the square holds
            face = align.choose_face(self._faces(request.image), region)
            alignment = align.Alignment(face.quad, size)
            box, face_picture = alignment.box(w, h), alignment.warp(request.image)
        else:
            alignment, box = None, region or (0, 0, w, h)
            face_picture = imaging.resize(imaging.crop(request.image, box), (size, size))
        return p, model, classifier, box, alignment, face_picture, sampling.to_tensor(face_picture, dtype, device)

    @torch.no_grad()
    def fit_slider(self, name: str, has: list[Request], lacks: list[Request], cancel: CancelToken,
                   on_progress=lambda done, total: None) -> Path:
        """Encode each example's face region, fit a direction (directions.fit_direction) and save it as
        slider `name` in the first example's own-sliders folder. Returns the saved file."""
        directions.check_name(name, ATTRIBUTES)
        if not has or not lacks:
            raise InputError("Mark at least one example that has the trait and one that lacks it.")
        for example in has + lacks:
            self.check(example)
        codes = []
        for i, example in enumerate(has + lacks):
            cancel.raise_if_cancelled()
            _, model, classifier, _, _, _, x = self._prepare(example)
            codes.append(model.encoder(x)[0].double())
            on_progress(i + 1, len(has) + len(lacks))
        stacked = torch.stack(codes)
        mean, std = classifier["mean"].double().reshape(-1), classifier["std"].double().reshape(-1)
        vector = directions.fit_direction(stacked[: len(has)], stacked[len(has):], mean, std)
        p = self.spec.values(has[0].params)
        return directions.save_direction(own_sliders_folder(p), name, vector, len(has), len(lacks), has[0].model or "")

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        cancel.raise_if_cancelled()
        # 1. The region.
        p, model, classifier, box, alignment, face_picture, x = self._prepare(request)
        dtype, image = x.dtype, request.image

        # 2. Codes, cached per region.
        key = (request.model, str(dtype), p["inversion_steps"], hashlib.sha1(np.ascontiguousarray(face_picture).tobytes()).hexdigest())
        cached = key in self._codes
        if cached:
            self._codes.move_to_end(key)
            z, x_t = self._codes[key]
        else:
            last = [time.perf_counter()]

            def encoding(i: int, n: int) -> None:  # inversion is most of the wait: its steps are counted too
                now = time.perf_counter()
                on_step(StepPreview(request.job_id, i, n, None, box, now - last[0], phase="Encoding the face"))
                last[0] = now

            z = model.encoder(x)
            x_t = sampling.invert(model, x, z, p["inversion_steps"], cancel.raise_if_cancelled, encoding)
            self._codes[key] = (z, x_t)
            while len(self._codes) > 8:
                self._codes.popitem(last=False)

        # 3. The move, along the classifier's 40 directions and the person's own sliders.
        own = directions.load_directions(own_sliders_folder(p), z.shape[-1])
        names = ATTRIBUTES + tuple(own)
        amounts = parse_attributes(p["attributes"], names)
        weight = torch.cat([classifier["weight"], *(v[None].to(classifier["weight"]) for v in own.values())])
        moved = sampling.move(z, weight, classifier["mean"], classifier["std"], amounts) if amounts else z

        # 4. Decode with previews, then paste back: through the face's quad, or a feathered square.
        last = [time.perf_counter()]

        def render(x0: torch.Tensor) -> np.ndarray:
            if alignment is not None:
                return alignment.paste(image, sampling.to_image(x0), p["feather"], box)
            return imaging.resize(sampling.to_image(x0), (box[2], box[3]))

        def show(i: int, n: int, x0: torch.Tensor) -> None:
            # The denoising thread only hands x0 over: the picture is made where the preview is shown.
            now = time.perf_counter()
            on_step(StepPreview(request.job_id, i, n, None, box, now - last[0], render=partial(render, preview.handed_over(x0)),
                                phase="Rendering"))
            last[0] = now
            cancel.raise_if_cancelled()

        out = sampling.decode(model, x_t, moved, p["render_steps"], show)
        info = {"attributes": {names[i]: a for i, a in amounts.items()}, "cached": cached, "alignment": p["alignment"]}
        if alignment is not None:
            info["face_quad"] = alignment.quad.round(1).tolist()
            return Result(image=alignment.paste(image, sampling.to_image(out), p["feather"]), box=box,
                          seconds=time.perf_counter() - started, info=info)
        generated = imaging.resize(sampling.to_image(out), (box[2], box[3]))
        square = np.zeros((box[3], box[2]), np.uint8)
        f = p["feather"]
        square[f : box[3] - f, f : box[2] - f] = 255  # the feather ramps inside the region, never outside it
        alpha = imaging.feather_mask(square, f) if p["region_size"] else np.ones((box[3], box[2]), np.float32)
        return Result(image=imaging.paste_back(image, generated, box, alpha), box=box, seconds=time.perf_counter() - started, info=info)
