"""Face alignment as the official DiffAE preprocessing does it (its align.py, FFHQ's `recreate_aligned_images`):
dlib's frontal face detector and 68-point landmark model find the face, a quad is set from the eyes and
the mouth, and the face is warped from that quad to the model's square. The edited square is warped back
into the photo through a feathered edge; every pixel outside the quad stays bit-identical.

The landmark model is dlib's `shape_predictor_68_face_landmarks.dat`, the one FFHQ was aligned with, as
the `face-recognition-models` package ships it (read from its folder: that package's own module needs
the removed pkg_resources). dlib comes from `dlib-bin`. Both are the `faces` extra; without them the
Attributes task works on a square the person drags.

Differences from the official code, and why: the official code warps to a large square with PIL and then
scales it down to the output size (256 for DiffAE); here the picture is first shrunk by the same integer
factor as the official `shrink` step and then warped straight to the model's size with OpenCV (same
quad, one resampling less). Beyond the photo's
edge the official code pads by reflection and blurs the padding; here it is reflected without the blur.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.api import InputError

DETECTION_SIDE = 1024  # faces are found on a copy at most this large: dlib's detector is slow on big photos


def landmark_model() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return path if path.is_file() else None


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and landmark_model() is not None


MISSING = ("Face alignment needs dlib and its landmark model: pip install \"sandcastle[faces]\" (dlib-bin and "
           "face-recognition-models), or set Alignment to square and drag a square around the face.")


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmark_model()))


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # the detector's rectangle (x, y, w, h) in the photo
    landmarks: np.ndarray  # (68, 2) float, x and y in photo pixels

    @property
    def quad(self) -> np.ndarray:
        return ffhq_quad(self.landmarks)


def find_faces(image: np.ndarray) -> list[Face]:
    """Every face dlib finds in an RGB photo, largest first."""
    if not available():
        raise InputError(MISSING)
    import cv2

    detector, predictor = _dlib_models()
    h, w = image.shape[:2]
    scale = min(1.0, DETECTION_SIDE / max(h, w))
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
    small = np.ascontiguousarray(small)
    faces = []
    for rect in detector(small, 1):  # one upsampling, as the official align.py
        shape = predictor(small, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float64) / scale
        box = tuple(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.width(), rect.height()))
        faces.append(Face(box, points))
    return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The oriented square FFHQ crops, corners top-left, bottom-left, bottom-right, top-right (its align.py)."""
    lm = np.asarray(landmarks, np.float64)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


@dataclass(frozen=True)
class Alignment:
    """A face's quad in a photo and the square of `size` pixels it maps to."""

    quad: np.ndarray
    size: int

    def square_to_photo(self) -> np.ndarray:
        """The 2×3 affine map from square pixel indices to photo pixel indices (pixel centres at +0.5 on
        both sides, as PIL's QUAD transform of the official code treats them)."""
        q0, q1, q3 = self.quad[0], self.quad[1], self.quad[3]
        across, down = (q3 - q0) / self.size, (q1 - q0) / self.size
        origin = q0 + 0.5 * across + 0.5 * down  # the centre of square pixel (0, 0), in continuous photo coordinates
        return np.array([[across[0], down[0], origin[0]], [across[1], down[1], origin[1]]], np.float64)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The quad's bounding box in the photo, clipped to it: the part of the photo an edit may change."""
        x0, y0 = np.floor(self.quad.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(self.quad.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            raise InputError("The face lies outside the picture.")
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    def warp(self, image: np.ndarray) -> np.ndarray:
        """The aligned face: the quad of `image` as a size×size RGB picture."""
        import cv2

        matrix = self.square_to_photo()
        scale = math.hypot(*(self.quad[3] - self.quad[0])) / self.size
        shrink = int(np.floor(scale * 0.5))  # the official shrink: scale down first so the warp does not alias
        if shrink > 1:
            h, w = image.shape[:2]
            small = (max(1, round(w / shrink)), max(1, round(h / shrink)))
            image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
            # Photo pixel p (centre p + 0.5) lies at (p + 0.5)·ratio − 0.5 in the shrunk picture.
            ratio = np.array([[small[0] / w], [small[1] / h]])
            matrix = matrix * ratio
            matrix[:, 2] += 0.5 * ratio[:, 0] - 0.5
        return cv2.warpAffine(np.ascontiguousarray(image), matrix, (self.size, self.size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    def paste(self, image: np.ndarray, square: np.ndarray, feather: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """`image` with the edited square warped back into the quad through a feathered edge (`feather`
        square pixels wide). With `box`, only that part of the result (for previews). Pixels the quad does
        not reach are returned unchanged, bit for bit."""
        import cv2

        h, w = image.shape[:2]
        x, y, bw, bh = box or self.box(w, h)
        matrix = self.square_to_photo()
        matrix[:, 2] -= (x, y)
        edge = np.zeros((self.size, self.size), np.float32)
        f = min(feather, self.size // 4)
        edge[f : self.size - f, f : self.size - f] = 1.0
        if f:
            edge = cv2.GaussianBlur(edge, (0, 0), f / 2)
            edge[edge < 1e-3] = 0.0
        alpha = cv2.warpAffine(edge, matrix, (bw, bh), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        warped = cv2.warpAffine(np.ascontiguousarray(square), matrix, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        region = image[y : y + bh, x : x + bw]
        blended = np.where(alpha > 0, np.round(region * (1 - alpha) + warped * alpha), region).astype(np.uint8)
        if box is not None:
            return blended
        out = image.copy()
        out[y : y + bh, x : x + bw] = blended
        return out


def choose_face(faces: list[Face], region: tuple[int, int, int, int] | None) -> Face:
    """The face to edit: the one whose centre lies in the square the person dragged (nearest its centre),
    else the largest."""
    if not faces:
        raise InputError("No face was found in the picture. Set Alignment to square and drag a square around the face.")
    if region is None or not region[2]:
        return faces[0]
    rx, ry, side, _ = region
    inside = [f for f in faces if rx <= f.box[0] + f.box[2] / 2 <= rx + side and ry <= f.box[1] + f.box[3] / 2 <= ry + side]
    if not inside:
        raise InputError("No face was found inside the square you marked; drag it around a face, or set Alignment to square.")
    centre = np.array([rx + side / 2, ry + side / 2])
    return min(inside, key=lambda f: np.hypot(*(np.array([f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2]) - centre)))
