"""Unusual picture files, made in code: colour profiles, transparency, 16 bits, palettes, EXIF rotation."""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

# sRGB's colorants adapted to D50, as every sRGB profile stores them.
SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def rgb_profile(description: str, red=SRGB_RED, green=SRGB_GREEN, blue=SRGB_BLUE, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (what cameras and editors embed for RGB spaces)."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0" + b"No copyright\0"), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"lcms" + b"\0" * 44)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def swapped_profile() -> bytes:
    """Red and green colorants swapped: a pure red pixel in a file with this profile is green in sRGB."""
    return rgb_profile("Swapped red and green", red=SRGB_GREEN, green=SRGB_RED)


def save_with_profile(path, image: np.ndarray, profile: bytes) -> None:
    Image.fromarray(image).save(path, icc_profile=profile)


def exif_rotated_jpeg(path, image: np.ndarray, orientation: int = 6) -> None:
    """A JPEG whose pixels are stored sideways with an EXIF Orientation tag saying how to turn them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, exif=exif.tobytes(), quality=95)
