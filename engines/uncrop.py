"""Uncropping: extend the picture beyond its borders and let the model continue the scene.

Top to bottom:
1. Place the picture on the larger canvas and pre-fill the new area (edge-blur by default: of the
   methods offered it came closest to the real photo next to the edge, see benchmarks/prefill.py).
2. Plan the passes: windows of the model's native size, each holding new area plus already-known
   picture as context. Left and right strips go first, then top and bottom across the full new
   width (so corners see generated neighbours); a strip wider than a window is filled in
   successive passes outward, a long edge in overlapping tiles. Nothing is stretched: every
   window is generated at (about) one document pixel per model pixel.
3. Each pass inpaints the still-unknown pixels of its window plus an overlap band of known pixels
   next to them, colour-matches to the window's untouched context, and blends back through a ramp
   that falls to zero at the band's outer edge. So pixels of the original farther than `overlap`
   from the new area are bit-identical, and seams between tiles are blended the same way.

Each pass is the Stable Diffusion step shared with inpaint, edit and colorize (sd.generate_crop).
"""

from __future__ import annotations

import time

import numpy as np

from engines import imaging, preview, sources
from engines.api import CancelToken, EngineSpec, InputError, ParamSpec, Request, Result, StepCallback, Task, check_common
from engines.dit import latent_format, prompt_warnings, step_for
from engines.sd import Crop, DEFAULT_MODELS, Timings, load_for, shared_params

DEFAULT_MODEL = DEFAULT_MODELS["inpaint"]  # each pass inpaints the new area

Box = tuple[int, int, int, int]
SIDES = ("left", "top", "right", "bottom")

SPEC = EngineSpec(
    id="uncrop",
    title="Uncrop",
    tasks=(Task.UNCROP,),
    default_model=DEFAULT_MODEL,
    params=(
        *(ParamSpec(side, int, 0, f"Extend {side}", f"Pixels to add on the {side}.", 0, 16384, 16) for side in SIDES),
        ParamSpec("overlap", int, 32, "Overlap", "Pixels of the original next to the new area that are regenerated and blended, hiding the seam.", 0, 256, 4),
        ParamSpec("prefill", str, "edge-blur", "Pre-fill", "How the new area starts before diffusion.", choices=imaging.PREFILLS),
        ParamSpec("context", int, 0, "Context", "Pixels of known picture each pass sees beside the new area; 0 means half the window.", 0, 2048, 16,
                  special_value="Half a window"),
        ParamSpec("max_side", int, 8192, "Largest side", "Extensions that would make the picture larger than this are refused.", 256, 32768, 256),
        *shared_params("color_match", "scheduler", "resolution", "preview"),
    ),
)


class UncropEngine:
    spec = SPEC

    def check(self, request: Request) -> None:
        check_common(request, self.spec)
        p = self.spec.values(request.params)
        sides = tuple(int(p[s]) for s in SIDES)
        if not any(sides):
            raise InputError("Choose how far to extend the picture: all four sides are 0.")
        height, width = request.image.shape[:2]
        new_w, new_h = width + sides[0] + sides[2], height + sides[1] + sides[3]
        if max(new_w, new_h) > p["max_side"]:
            raise InputError(
                f"The extended picture would be {new_w}×{new_h} pixels, more than the limit of {p['max_side']} on a side; "
                "extend less or raise Largest side."
            )
        sources.resolve_source(request.model or DEFAULT_MODEL, request.allow_pickle, purpose="inpaint")

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        p = self.spec.values(request.params)
        sides = tuple(int(p[s]) for s in SIDES)
        left, top, right, bottom = sides
        cancel.raise_if_cancelled()
        loaded, device, dtype = load_for(request, "inpaint", DEFAULT_MODEL, on_step, cancel)
        cancel.raise_if_cancelled()

        # 1. The canvas.
        image = request.image
        height, width = image.shape[:2]
        canvas = imaging.extend_canvas(image, sides, p["prefill"], seed=request.seed)
        known = np.zeros(canvas.shape[:2], bool)
        known[top : top + height, left : left + width] = True

        # 2. The passes.
        window = p["resolution"] or loaded.native
        context = p["context"] or window // 2
        tiles = plan_tiles(known, (left, top, width, height), sides, window, min(context, window - 16))
        previewer = preview.previewer_for(p["preview"], latent_format(loaded), device, dtype)
        generate = step_for(loaded)

        # 3. Fill them one by one; every pass sees what the previous ones made.
        timings = Timings()
        for k, box in enumerate(tiles, start=1):
            cancel.raise_if_cancelled()
            x, y, w, h = box
            part_known = known[y : y + h, x : x + w]
            unknown = np.where(part_known, 0, 255).astype(np.uint8)
            alpha = imaging.feather_mask(unknown, p["overlap"])  # 1 on new pixels, a ramp over the band, 0 beyond
            model_mask = np.where(alpha > 0, 255, 0).astype(np.uint8)
            crop = canvas[y : y + h, x : x + w].copy()
            generated, _ = generate(loaded=loaded, request=request, params=p,
                                         crop=Crop(model_image=crop, model_mask=model_mask, shown_under=crop, alpha=alpha, box=box),
                                         previewer=previewer, on_step=on_step, cancel=cancel, passes=(k, len(tiles)), offset=(left, top),
                                         timings=timings)
            if p["color_match"]:
                generated = imaging.match_colors(generated, crop, measure=part_known & (alpha == 0), apply=alpha > 0)
            canvas[y : y + h, x : x + w] = imaging.paste_back(crop, generated, (0, 0, w, h), alpha)
            known[y : y + h, x : x + w] = True

        seconds = time.perf_counter() - started
        return Result(
            image=canvas,
            box=(0, 0, canvas.shape[1], canvas.shape[0]),
            offset=(left, top),
            seconds=seconds,
            info={"timings": timings.report(seconds), "warnings": prompt_warnings(loaded, request), "model": loaded.source.label, "passes": len(tiles), "window": window, "device": str(device),
                  "dtype": str(dtype).replace("torch.", ""), "sides": sides},
        )


def plan_tiles(known: np.ndarray, original: Box, sides: tuple[int, int, int, int], window: int, context: int) -> list[Box]:
    """Windows (x, y, w, h) that together fill every unknown pixel, each at most window×window and
    each holding known picture (the original or earlier passes) as context on its inner side."""
    height, width = known.shape
    ox, oy, ow, oh = original
    left, top, right, bottom = sides
    step = window - context  # new pixels a pass adds outward
    tiles: list[Box] = []

    def along(start: int, stop: int, limit: int) -> list[tuple[int, int]]:
        """Overlapping spans of at most `window` covering [start, stop), inside [0, limit)."""
        length = stop - start
        if length <= window:
            lo = max(0, min(start, limit - window)) if length < window else start
            return [(lo, min(limit, lo + window) - lo)]
        count = int(np.ceil((length - window) / (window - context // 2))) + 1
        starts = np.linspace(start, stop - window, count).round().astype(int)
        return [(int(s), window) for s in starts]

    # Left and right strips, beside the original rows, outward in passes.
    for side, extent in (("left", left), ("right", right)):
        for done in range(0, extent, step):
            if side == "right":
                x0 = max(0, ox + ow + done - context)
            else:
                x0 = max(0, ox - done - window + context)
            x1 = min(width, x0 + window)
            for y0, h in along(oy, oy + oh, height):
                tiles.append((x0, y0, x1 - x0, h))
    # Top and bottom strips across the whole new width, corners included.
    for side, extent in (("top", top), ("bottom", bottom)):
        for done in range(0, extent, step):
            if side == "bottom":
                y0 = max(0, oy + oh + done - context)
            else:
                y0 = max(0, oy - done - window + context)
            y1 = min(height, y0 + window)
            for x0, w in along(0, width, width):
                tiles.append((x0, y0, w, y1 - y0))
    # Keep only windows that still have something to fill when their turn comes.
    filled = known.copy()
    useful = []
    for x, y, w, h in tiles:
        if not filled[y : y + h, x : x + w].all():
            useful.append((x, y, w, h))
            filled[y : y + h, x : x + w] = True
    if not filled.all():  # a gap the plan missed would stay pre-filled; never let that happen silently
        raise AssertionError("uncrop tile plan leaves pixels unfilled")
    return useful
