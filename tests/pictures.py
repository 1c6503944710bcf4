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
    """A minimal ICC v2 matrix/TRC display profile (what cameras and editors embed for RGB spaces) with a pure gamma."""
    return matrix_trc_profile(description, red, green, blue, b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0")


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


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header declares width×height but carries almost no data: what a decompression bomb
    or a forged size looks like before decoding."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def bad_input_corpus(folder, photo: np.ndarray) -> dict[str, tuple[str, bool]]:
    """Write the corpus of awkward inputs into `folder`: name → (file name, whether it must open)."""
    from pathlib import Path

    folder = Path(folder)
    small = np.ascontiguousarray(photo[:64, :96])
    Image.fromarray(small).save(folder / "good.png")
    Image.fromarray(small).save(folder / "good.jpg", quality=90)
    corpus: dict[str, tuple[str, bool]] = {}

    def add(name: str, file: str, opens: bool) -> None:
        corpus[name] = (file, opens)

    (folder / "zero.png").write_bytes(b"")
    add("zero-byte file", "zero.png", False)
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:200])
    add("truncated PNG", "truncated.png", False)
    (folder / "truncated.jpg").write_bytes((folder / "good.jpg").read_bytes()[:300])
    add("truncated JPEG", "truncated.jpg", False)
    (folder / "text.png").write_text("this is not a picture\n")
    add("text file named .png", "text.png", False)
    Image.new("RGB", (1, 1), (200, 0, 0)).save(folder / "one.png")
    add("1×1 image", "one.png", True)
    Image.fromarray((np.arange(64 * 96, dtype=np.uint16).reshape(64, 96) * 10)).save(folder / "deep.png")
    add("16-bit PNG", "deep.png", True)
    Image.fromarray(small).convert("CMYK").save(folder / "cmyk.jpg")
    add("CMYK JPEG", "cmyk.jpg", True)
    pal = Image.fromarray(small).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(folder / "palette.png", transparency=0)
    add("palette image with transparency", "palette.png", True)
    frames = [Image.fromarray(np.full((64, 96, 3), v, np.uint8)) for v in (30, 120, 220)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated GIF", "animated.gif", True)
    exif_rotated_jpeg(folder / "rotated.jpg", np.ascontiguousarray(np.rot90(small, 1)), orientation=6)
    add("EXIF-rotated JPEG", "rotated.jpg", True)
    png_header_only(folder / "bomb.png", 200_000, 200_000)
    add("decompression-bomb header", "bomb.png", False)
    png_header_only(folder / "declared.png", 30_000, 30_000)
    add("30000×30000 declared size", "declared.png", False)
    return corpus


def non_utf8_name(folder, photo: np.ndarray) -> str:
    """A picture whose file name is not valid UTF-8 (Latin-1 bytes), as the str Python gives for it."""
    import os

    raw = os.fsencode(str(folder)) + b"/caf\xe9-\xff.png"
    with open(raw, "wb") as f:
        Image.fromarray(np.ascontiguousarray(photo[:64, :96])).save(f, "PNG")
    return os.fsdecode(raw)


# Colorants adapted to D50, as ICC profiles store them (Bradford, from each space's primaries and D65 white).
ADOBE_RGB_RED, ADOBE_RGB_GREEN, ADOBE_RGB_BLUE = (0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)
DISPLAY_P3_RED, DISPLAY_P3_GREEN, DISPLAY_P3_BLUE = (0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)


def matrix_trc_profile(description: str, red, green, blue, curve: bytes) -> bytes:
    """An ICC v2 matrix/TRC display profile with the given tone curve tag (`curv` or `para`) on all three channels."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0" + b"No copyright\0"), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0)
              + _s15(0.8249) + b"lcms" + b"\0" * 44)
    return header + struct.pack(">I", len(tags)) + table + data


def adobe_rgb_profile() -> bytes:
    """Adobe RGB (1998): wider greens than sRGB, a pure 563/256 gamma."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"
    return matrix_trc_profile("Adobe RGB (1998)", ADOBE_RGB_RED, ADOBE_RGB_GREEN, ADOBE_RGB_BLUE, curve)


def display_p3_profile() -> bytes:
    """Display P3: DCI-P3 primaries, D65 white and sRGB's tone curve (a parametric curve, as Apple's profile has)."""
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(_s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    return matrix_trc_profile("Display P3", DISPLAY_P3_RED, DISPLAY_P3_GREEN, DISPLAY_P3_BLUE, curve)


def wide_gamut_photo(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colours with texture across the whole RGB cube, and a band of saturated green (0, 255, 0)
    at the bottom that a wide-gamut space holds and sRGB cannot."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) * 255 // max(1, width + height - 2)], -1)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    image[-12:] = (0, 255, 0)
    return image
