"""numpy ↔ QImage. QImage may be built on any thread (QPixmap only on the GUI thread)."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage


def to_qimage(array: np.ndarray) -> QImage:
    """A QImage that owns a copy of an RGB uint8 (H, W, 3) or greyscale (H, W) array."""
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    fmt = QImage.Format_RGB888 if array.ndim == 3 else QImage.Format_Grayscale8
    return QImage(array.data, w, h, array.strides[0], fmt).copy()


def from_qimage(image: QImage) -> np.ndarray:
    """RGB uint8 (H, W, 3) copy of any QImage."""
    image = image.convertToFormat(QImage.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    buffer = np.frombuffer(image.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return buffer[:, : w * 3].reshape(h, w, 3).copy()
