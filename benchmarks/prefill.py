"""Which pre-fill gives uncropping the best start? Measured on real photographs.

    python -m benchmarks.prefill

For each photo of scikit-image's data set, keep the central 60 % (the "original"), extend it back to
the full frame with every pre-fill method and compare the filled area with the real photo there:
mean absolute error in Lab (ΔE-like, lower is closer in colour and lightness) over the whole new
area and over the first 32 pixels beyond the edge (where a seam would show). Prints one table and
the method with the lowest mean error over the edge band, which is what the diffusion model sees
next to the original and what decides whether a seam shows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left", "hubble_deep_field")


def photos():
    from skimage import data

    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # some data files are fetched on demand; skip those that are not shipped
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, 2)
        yield name, np.ascontiguousarray(image[..., :3])


def main() -> None:
    from scipy import ndimage

    from engines import imaging

    rows = {m: {"all": [], "edge": [], "seconds": []} for m in imaging.PREFILLS}
    names = []
    for name, photo in photos():
        names.append(name)
        h, w = photo.shape[:2]
        top, left = int(h * 0.2), int(w * 0.2)
        bottom, right = h - top - int(h * 0.6), w - left - int(w * 0.6)
        original = photo[top : h - bottom, left : w - right]
        known = np.zeros((h, w), bool)
        known[top : h - bottom, left : w - right] = True
        edge = (~known) & (ndimage.distance_transform_edt(~known) <= 32)
        truth = imaging.rgb_to_lab(photo)
        for method in imaging.PREFILLS:
            start = time.perf_counter()
            filled = imaging.extend_canvas(original, (left, top, right, bottom), method)
            rows[method]["seconds"].append(time.perf_counter() - start)
            error = np.abs(imaging.rgb_to_lab(filled) - truth).mean(-1)
            rows[method]["all"].append(error[~known].mean())
            rows[method]["edge"].append(error[edge].mean())
    print(f"photos: {', '.join(names)} (central 60 % kept, the rest filled)")
    print(f"{'method':<15}{'Lab error, new area':>22}{'Lab error, first 32 px':>25}{'seconds':>10}")
    for method, r in sorted(rows.items(), key=lambda kv: np.mean(kv[1]["edge"])):
        print(f"{method:<15}{np.mean(r['all']):>22.2f}{np.mean(r['edge']):>25.2f}{np.mean(r['seconds']):>10.3f}")
    best = min(rows, key=lambda m: np.mean(rows[m]["edge"]))
    print(f"best next to the original: {best}")


if __name__ == "__main__":
    main()
