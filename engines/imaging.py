"""Pure numpy/PIL image work shared by the engines: loading, the working crop, masks, pre-fill,
colour matching and the final paste-back.

Conventions: images are RGB uint8 arrays (H, W, 3); masks are uint8 (H, W) with 255 = repaint;
boxes are (x, y, w, h) in pixels of the full image.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from scipy import ndimage

from engines.api import InputError

Box = tuple[int, int, int, int]

# Opening a huge file must be a clear refusal, not an out-of-memory crash minutes later.
MAX_PIXELS = 20_000 * 20_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
CMS_ERRORS = (ImageCms.PyCMSError, OSError, ValueError)  # what LittleCMS raises for a damaged or unusable profile


# ---- files ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ColourSource:
    """A picture file's own colours, kept so that saving changes nothing the person did not change.

    The editor and the engines work on an sRGB view of the picture (`srgb_view`); `profile` is the
    file's ICC profile as embedded and `pixels` its RGB values as decoded, in that profile's space
    (EXIF orientation applied). `offset` = (left, top) is where those pixels lie in the picture being
    edited: uncrop places the old picture inside a larger one (`moved`). Saving with this record
    (`save_image(..., colour=)`) writes the file's own value wherever the sRGB view is unchanged and
    converts only the changed pixels back through the profile, which it embeds again."""

    profile: bytes
    pixels: np.ndarray
    description: str = ""
    offset: tuple[int, int] = (0, 0)

    def moved(self, offset: tuple[int, int]) -> "ColourSource":
        """The record for a picture that now holds this one at `offset` = (left, top) (uncrop's result offset)."""
        return replace(self, offset=(self.offset[0] + int(offset[0]), self.offset[1] + int(offset[1])))


class Picture(NamedTuple):
    image: np.ndarray  # RGB uint8 in sRGB: what is shown, edited and given to the engines
    alpha: np.ndarray | None  # None when the picture has no transparency
    colour: ColourSource | None  # None when the file is sRGB already (or untagged, CMYK, greyscale)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read any picture PIL understands as RGB uint8 (see load_picture)."""
    return read_picture(path, max_pixels).image


def load_picture(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 in sRGB and the picture's alpha channel (see read_picture, which also gives the file's
    own colours so that a save can keep them)."""
    picture = read_picture(path, max_pixels)
    return picture.image, picture.alpha


def read_picture(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Picture:
    """RGB uint8 in sRGB, the alpha channel (None when there is none or it is fully opaque) and, for an
    RGB file with an ICC profile other than sRGB, its own colours (ColourSource), with EXIF orientation
    applied. CMYK and greyscale files with a profile are converted to sRGB and keep no record: saving
    writes them as sRGB, as before. Pictures above `max_pixels` are refused before they are decoded."""
    name = Path(path).name
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise InputError(f"{name} is {im.width}×{im.height} ({im.width * im.height / 1e6:.3g} million pixels); Sandcastle opens "
                                 f"pictures up to {max_pixels / 1e6:g} million pixels (Tools → Settings).")
            im = ImageOps.exif_transpose(im)
            colour, image = colour_source(im), None
            if colour is not None:
                try:
                    image = srgb_view(colour)  # the same function a save uses to recognise unchanged pixels
                except CMS_ERRORS:
                    colour = None  # a profile LittleCMS reads but cannot convert with: treated as before
            if colour is None:
                im = to_srgb(im)
            alpha = None
            if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                alpha = np.array(im.getchannel("A"), dtype=np.uint8)
                if alpha.min() == 255:
                    alpha = None
            return Picture(to_rgb(im) if image is None else image, alpha, colour)
    except FileNotFoundError:
        raise InputError(f"There is no file called {name}.") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a folder, not an image.") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name} is too large to open (more than {max_pixels / 1e6:g} million pixels).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} could not be read as an image ({_short(exc)}).") from None


def _foreign_profile(icc: bytes | None):
    """The embedded ICC profile as LittleCMS reads it, or None when there is none, it is sRGB (a conversion
    would only add rounding) or it is damaged (the pixels as stored are then the best guess left)."""
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower().replace(" ", ""):
            return None
        return profile
    except CMS_ERRORS:
        return None


def _convert(rgb: np.ndarray, source: ImageCms.ImageCmsProfile, target: ImageCms.ImageCmsProfile) -> np.ndarray:
    """RGB uint8 from one profile to another with LittleCMS (perceptual intent, as loading has always used)."""
    return np.asarray(ImageCms.profileToProfile(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), source, target, outputMode="RGB"))


def colour_source(im: Image.Image) -> ColourSource | None:
    """The record of an RGB(A) picture's own colours when it carries a profile other than sRGB, else None."""
    icc = im.info.get("icc_profile")
    if im.mode not in ("RGB", "RGBA"):
        return None
    profile = _foreign_profile(icc)
    if profile is None:
        return None
    try:
        ImageCms.buildTransform(SRGB, profile, "RGB", "RGB")  # saving converts changed pixels back: a read-only (scanner) profile cannot
    except CMS_ERRORS:
        return None
    pixels = np.array(im.convert("RGB"), dtype=np.uint8)  # RGBA → RGB drops alpha and leaves the colour values as stored
    return ColourSource(bytes(icc), pixels, ImageCms.getProfileDescription(profile).strip())


def srgb_view(colour: ColourSource) -> np.ndarray:
    """The file's own pixels seen in sRGB, RGB uint8: exactly what `read_picture` gave the editor."""
    return _convert(colour.pixels, _foreign_profile(colour.profile), SRGB)


def in_file_colours(image: np.ndarray, colour: ColourSource) -> np.ndarray:
    """`image` (sRGB, what the editor holds) in the colour space of the file `colour` came from.

    Where a pixel still equals the sRGB view of the file's own pixel at that place, the file's own
    value is written, bit for bit (colours sRGB cannot show survive unclipped); every other pixel
    (changed, or new like uncrop's border) is converted from sRGB through the profile."""
    height, width = image.shape[:2]
    left, top = colour.offset
    own_height, own_width = colour.pixels.shape[:2]
    x0, y0, x1, y1 = max(0, left), max(0, top), min(width, left + own_width), min(height, top + own_height)
    kept = np.zeros((height, width), bool)
    out = np.array(image, dtype=np.uint8)
    if x1 > x0 and y1 > y0:
        own = colour.pixels[y0 - top : y1 - top, x0 - left : x1 - left]
        view = srgb_view(colour)[y0 - top : y1 - top, x0 - left : x1 - left]
        kept[y0:y1, x0:x1] = (image[y0:y1, x0:x1] == view).all(axis=-1)
    box = mask_bbox((~kept).view(np.uint8))
    if box is not None:
        x, y, w, h = box
        converted = _convert(image[y : y + h, x : x + w], SRGB, _foreign_profile(colour.profile))
        changed = ~kept[y : y + h, x : x + w]
        out[y : y + h, x : x + w][changed] = converted[changed]
    if x1 > x0 and y1 > y0:
        region = out[y0:y1, x0:x1]
        region[kept[y0:y1, x0:x1]] = own[kept[y0:y1, x0:x1]]
    return out


def to_srgb(im: Image.Image) -> Image.Image:
    """The picture in sRGB: an embedded ICC profile other than sRGB (Display P3, Adobe RGB, a CMYK
    press profile, a greyscale curve…) is converted with LittleCMS; without one, sRGB is assumed, as
    browsers do. Used for the files that keep no ColourSource (CMYK, greyscale, palettes)."""
    if im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    source = _foreign_profile(im.info.get("icc_profile"))
    if source is None:
        return im
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    try:
        converted = ImageCms.profileToProfile(im.convert("RGB") if alpha is not None else im, source, SRGB, outputMode="RGB")
    except CMS_ERRORS:
        return im  # a profile LittleCMS reads but cannot convert with: the pixels as stored are the best guess left
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def to_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 from any PIL mode; 16-bit greyscale is scaled down, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    return np.array(im.convert("RGB"), dtype=np.uint8)


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Read a mask file (white = repaint). `size` is the image's (width, height); it must match."""
    name = Path(path).name
    try:
        with Image.open(path) as im:
            _same_size("mask is", im.size, size)  # from the header, before a mismatched (maybe huge) file is decoded
            if im.mode in ("RGBA", "LA") and np.asarray(im.getchannel("A")).min() < 255:
                # A transparent PNG mask: painted (opaque) pixels are the ones to repaint.
                mask = np.asarray(im.getchannel("A"), dtype=np.uint8)
            else:
                mask = np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"There is no mask file called {name}.") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name} is far larger than the image ({size[0]}×{size[1]}); the mask must be the same size.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} could not be read as a mask ({_short(exc)}).") from None
    return np.ascontiguousarray(mask)


def load_hints(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Colour hints as RGBA uint8: an RGBA file's opaque pixels, or an RGB file's non-black ones."""
    name = Path(path).name
    try:
        with Image.open(path) as im:
            _same_size("hints are", im.size, size)
            rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
            if "A" not in im.getbands():
                rgba[..., 3] = np.where(rgba[..., :3].any(-1), 255, 0)
    except FileNotFoundError:
        raise InputError(f"There is no hints file called {name}.") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name} is far larger than the image ({size[0]}×{size[1]}); the hints must be the same size.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} could not be read as colour hints ({_short(exc)}).") from None
    return rgba


def _same_size(what: str, found: tuple[int, int], size: tuple[int, int]) -> None:
    if tuple(found) != tuple(size):
        raise InputError(f"The {what} {found[0]}×{found[1]} but the image is {size[0]}×{size[1]}; they must be the same size.")


SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def save_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95, alpha: np.ndarray | None = None,
               colour: ColourSource | None = None) -> None:
    """Write a picture so that no failure leaves a damaged file: into a temporary file in the same folder,
    flushed and synced to the disk, then renamed over `path` (the folder synced too where the system can).

    With `alpha`, PNG and WebP keep the transparency; JPEG has none, so it gets a white background. With
    `colour` (read_picture's record), the picture is written in the file's own colour space with its
    profile embedded: unchanged pixels are the file's own, bit for bit (see in_file_colours). Before
    writing, the temporaries that killed saves left in the folder are removed (remove_stale_temporaries).
    A missing or read-only folder, a read-only file, a folder in the way and a full disk raise InputError
    with one sentence saying what to do."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"Sandcastle saves PNG, JPEG or WebP; {path.name} has none of those endings.")
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{path.name} is a folder; choose a file name to save to.")
    if not folder.is_dir():
        raise InputError(f"The folder {folder} does not exist; choose a folder that does.")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise InputError(f"{path.name} is read-only; save under another name or in another folder.")
    options: dict = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if colour is not None and image.ndim == 3:
        image = in_file_colours(image, colour)
        options["icc_profile"] = colour.profile
    mode = "L" if image.ndim == 2 else "RGB"
    if alpha is not None and fmt == "JPEG":
        a = alpha[..., None].astype(np.float32) / 255
        image = np.round(image * a + 255 * (1 - a)).astype(np.uint8)  # white is white in every RGB profile too
    elif alpha is not None:
        image, mode = np.dstack([image, alpha]), "RGBA"
    remove_stale_temporaries(folder)  # first: on a full disk, what they held may be what this save needs
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", suffix=path.suffix, dir=folder)
    except OSError as exc:
        raise _save_error(exc, path) from exc  # the cause stays for logs and for callers that tell disk from input
    try:
        with os.fdopen(fd, "wb") as f:
            _lock_while_writing(f.fileno())
            Image.fromarray(image, mode).save(f, fmt, **options)
            f.flush()
            os.fsync(f.fileno())  # on the disk before the rename: a power cut must not leave an empty file under the old name
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600 files; a saved picture gets ordinary permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _save_error(exc, path) from exc
        raise
    _sync_folder(folder)


def _save_error(exc: OSError, path: Path) -> InputError:
    """One sentence for a failed save: what happened and what to do."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return InputError(f"No space left on the disk for {path.name}; free some space or save somewhere else.")
    if exc.errno == errno.EROFS or isinstance(exc, PermissionError):
        return InputError(f"The folder {path.parent} is read-only; save somewhere else.")
    if isinstance(exc, FileNotFoundError):
        return InputError(f"The folder {path.parent} does not exist; choose a folder that does.")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{path.name} is a folder; choose a file name to save to.")
    return InputError(f"{path.name} could not be saved ({_short(exc)}); try saving somewhere else.")


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable. Not every system can (Windows opens no folders, some file systems
    refuse); the new file is complete either way, so a refusal is no error."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# ---- temporaries that a killed save left behind ------------------------------------------------

# A save writes `.sandcastle-<process id>-<8 random characters><ending>` next to its target. The name
# says the file is ours; the process id and a lock held while writing say whether its writer still runs.
TEMPORARY_PREFIX = ".sandcastle-"
_TEMPORARY_NAME = re.compile(r"\.sandcastle-(\d+)-[a-z0-9_]{8}\.(png|jpe?g|webp)\Z", re.IGNORECASE)
STALE_AFTER_SECONDS = 24 * 3600  # no save takes a day: past that the process id may belong to another program


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that saves killed mid-write (a crash, a kill, a power cut) left in `folder`,
    and return them. Only files named as `save_image` names them are touched, and only when no save is
    writing them: none holds the file's lock and the process named in it is gone (or the file is a day
    old). A save still running here, in another process, or in a sandbox or computer that shares the
    folder keeps its file. Nothing here fails: a folder that cannot be listed is left as it is."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        named = _TEMPORARY_NAME.match(entry.name)
        if named is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or _locked(entry.path):
                continue
            old = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SECONDS
            if _process_alive(int(named.group(1))) and not old:
                continue
            os.unlink(entry.path)
        except (OSError, OverflowError):  # removed meanwhile, not ours to remove, or a process id no system has
            continue
        removed.append(Path(entry.path))
    return removed


def _lock_while_writing(fd: int) -> None:
    """Hold an exclusive lock on a temporary being written. The system drops it when the writer dies,
    however it dies, so a free lock means nobody writes there, whatever process ids another sandbox or
    computer uses. Where locks are not available the process id alone decides."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def _locked(path: str) -> bool:
    """True while a save holds the temporary's lock, or when it cannot be opened to find out."""
    try:
        import fcntl
    except ImportError:
        return False  # Windows: a file another process has open cannot be removed anyway
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False  # this file system has no locks: the process id decides
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this computer."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl+C there
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


# ---- the working region ---------------------------------------------------------------------


def mask_bbox(mask: np.ndarray, threshold: int = 1) -> Box | None:
    """Bounding box (x, y, w, h) of the pixels >= threshold, or None when there are none."""
    rows = np.flatnonzero((mask >= threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask >= threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def expand_box(box: Box, margin: int, width: int, height: int) -> Box:
    """Grow a box by `margin` on every side, clipped to the image."""
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
    return x0, y0, x1 - x0, y1 - y0


def working_size(width: int, height: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """The size to generate at: about native×native pixels in area, same aspect, multiples of `multiple`.

    Small crops are scaled up (the model works best at its native size) and large ones down,
    so a 4000-px photo and a 100-px mask both reach the model at the resolution it was trained on.
    """
    scale = native / math.sqrt(width * height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


# Width:height shapes a compiled model is prepared for; each becomes one working size of about the
# native area (SDXL's training buckets are of this kind). A static compile builds one program per size,
# so a compiled model works at the nearest of these instead of at every crop's own shape.
BUCKET_ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 1 / 2)


def bucket_size(width: int, height: int, native: int, multiple: int = 64) -> tuple[int, int]:
    """The bucket working size for a crop of `width`×`height`: the shape in BUCKET_ASPECTS nearest to the
    crop's (in log ratio), at about native×native pixels, in multiples of `multiple`."""
    aspect = min(BUCKET_ASPECTS, key=lambda a: abs(math.log(a) - math.log(width / height)))
    w = max(multiple, int(round(native * math.sqrt(aspect) / multiple)) * multiple)
    h = max(multiple, int(round(native / math.sqrt(aspect) / multiple)) * multiple)
    return w, h


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return image[y : y + h, x : x + w]


def resize(image: np.ndarray, size: tuple[int, int], resample: int = Image.LANCZOS) -> np.ndarray:
    """Resize an RGB/L uint8 array or a float alpha to (width, height)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize(size, resample))
    return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(size, Image.BILINEAR))


def working_region(image: np.ndarray, mask: np.ndarray | None, grow: int, feather: float, padding: int) -> tuple[Box, np.ndarray, bool]:
    """Where an edit works and how it blends back: with a painted mask, the mask's box grown by
    grow + feather + padding and the feathered (grown) mask over it; without one, the whole picture
    at full strength. Returns (box, alpha over the box, masked)."""
    height, width = image.shape[:2]
    if mask is None or not binary(mask).any():
        return (0, 0, width, height), np.ones((height, width), np.float32), False
    box = expand_box(mask_bbox(mask, 128), grow + int(np.ceil(feather)) + padding, width, height)
    return box, feather_mask(grow_mask(crop(mask, box), grow), feather), True


# ---- masks ----------------------------------------------------------------------------------


def binary(mask: np.ndarray) -> np.ndarray:
    return mask >= 128


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (< 0) a mask by a Euclidean distance; returns uint8 0/255."""
    inside = binary(mask)
    if pixels > 0 and inside.any():
        inside = ndimage.distance_transform_edt(~inside) <= pixels
    elif pixels < 0 and not inside.all():  # the picture's border is not an edge: a full mask stays full
        inside = ndimage.distance_transform_edt(inside) > -pixels
    return np.where(inside, 255, 0).astype(np.uint8)


def fill_region(mask: np.ndarray, x: int, y: int, value: int) -> np.ndarray:
    """The mask with the connected area around (x, y) that is on the same side of the threshold as
    that pixel (4-connected) set to `value` (255 fills a hole, 0 empties a painted patch)."""
    import cv2

    area = binary(mask).astype(np.uint8)
    flags = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    cv2.floodFill(area, flags, (int(x), int(y)), 2, 0, 0, 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8))
    out = mask.copy()
    out[flags[1:-1, 1:-1] == 1] = value
    return out


def feather_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Float alpha in [0, 1]: 1 on the mask, a smooth ramp over `radius` pixels outside it, and
    exactly 0 farther than `radius` from the mask, so those pixels are pasted back unchanged."""
    inside = binary(mask)
    if radius <= 0 or not inside.any():  # an empty mask has no distance to measure from (the EDT would be garbage)
        return inside.astype(np.float32)
    distance = ndimage.distance_transform_edt(~inside)
    t = np.clip(1.0 - distance / radius, 0.0, 1.0)
    alpha = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible edge where the ramp starts or ends
    alpha[distance > radius] = 0.0
    return alpha.astype(np.float32)


# ---- pre-fill ---------------------------------------------------------------------------------


def prefill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the masked pixels smoothly from their surroundings (push-pull over an image pyramid).

    A flat fill leaks its colour into the result; this gives the model the colours around the hole.
    """
    hole = binary(mask)
    if not hole.any():
        return image
    if hole.all():
        return np.full_like(image, 127)
    values = image.astype(np.float32) * ~hole[:, :, None]
    weights = (~hole).astype(np.float32)
    levels = [(values, weights)]
    while min(values.shape[:2]) > 1 and (weights == 0).any():
        values, weights = _halve(values), _halve(weights[:, :, None])[:, :, 0]
        levels.append((values, weights))
    filled = levels[-1][0] / np.maximum(levels[-1][1], 1e-6)[:, :, None]
    for values, weights in reversed(levels[:-1]):
        up = _double(filled, values.shape[:2])
        known = values / np.maximum(weights, 1e-6)[:, :, None]
        w = np.clip(weights, 0, 1)[:, :, None]
        filled = known * w + up * (1 - w)
    out = image.copy()
    out[hole] = np.clip(np.round(filled[hole]), 0, 255).astype(np.uint8)
    return out


def _halve(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else a
    return a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]


def _double(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    up = np.asarray(
        [np.asarray(Image.fromarray(a[:, :, c]).resize((a.shape[1] * 2, a.shape[0] * 2), Image.BILINEAR)) for c in range(a.shape[2])]
    ).transpose(1, 2, 0)
    return up[: shape[0], : shape[1]]


# ---- colour ---------------------------------------------------------------------------------

_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (or float 0..1) → CIE Lab (D65), float64."""
    c = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) → sRGB uint8, out-of-gamut colours clipped."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0, 1)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def match_colors(generated: np.ndarray, original: np.ndarray, measure: np.ndarray, apply: np.ndarray | None = None) -> np.ndarray:
    """Correct the colour drift of a generated crop.

    Where `measure` is True the generated crop should reproduce the original (it is context the
    model kept), so any difference there is drift from the VAE round trip or the sampler. Fit a
    per-channel Lab mean/std transfer on those pixels and apply it where `apply` is True (default:
    everywhere), so the new content meets its surroundings without a colour step. With fewer than
    64 context pixels there is nothing reliable to measure and the crop is returned as it is.
    """
    if measure.sum() < 64:
        return generated
    picked = np.flatnonzero(measure)
    if picked.size > 200_000:  # the statistics need a sample, not every pixel of a large crop
        picked = picked[:: picked.size // 200_000]
    g = rgb_to_lab(generated.reshape(-1, 3)[picked])
    o = rgb_to_lab(original.reshape(-1, 3)[picked])
    g_mean, g_std = g.mean(axis=0), g.std(axis=0)
    o_mean, o_std = o.mean(axis=0), o.std(axis=0)
    # A near-flat context would give a huge gain; keep the correction to a plausible drift.
    gain = np.clip(o_std / np.maximum(g_std, 1e-3), 0.5, 2.0)
    where = np.ones(generated.shape[:2], bool) if apply is None else apply
    out = generated.copy()
    out[where] = lab_to_rgb((rgb_to_lab(generated[where]) - g_mean) * gain + o_mean)
    return out


# ---- paste-back -------------------------------------------------------------------------------


def paste_back(original: np.ndarray, generated: np.ndarray, box: Box, alpha: np.ndarray) -> np.ndarray:
    """Blend `generated` (the size of `box`) into a copy of `original` through `alpha` (same size).

    Where alpha is 0 the original pixel is copied bit for bit; nothing outside `box` is touched.
    """
    x, y, w, h = box
    if generated.shape[:2] != (h, w) or alpha.shape != (h, w):
        raise ValueError("generated crop and alpha must match the box")
    out = original.copy()
    region = original[y : y + h, x : x + w]
    a = alpha[:, :, None].astype(np.float32)
    blended = np.round(region.astype(np.float32) * (1 - a) + generated.astype(np.float32) * a).astype(np.uint8)
    out[y : y + h, x : x + w] = np.where(a > 0, blended, region)
    return out


# ---- extending the canvas (uncrop) -------------------------------------------------------------

PREFILLS = ("edge-blur", "smooth", "mirror", "telea", "navier-stokes", "noise")
Sides = tuple[int, int, int, int]  # left, top, right, bottom


def embed(layer: np.ndarray, size: tuple[int, int], offset: tuple[int, int], fill: int) -> np.ndarray:
    """`layer` placed at `offset` = (left, top) in a new array of `size` = (height, width) filled with
    `fill` elsewhere: a mask, hints or alpha layer following its picture when uncrop grows it."""
    left, top = offset
    out = np.full((*size, *layer.shape[2:]), fill, layer.dtype)
    out[top : top + layer.shape[0], left : left + layer.shape[1]] = layer
    return out


def extend_canvas(image: np.ndarray, sides: Sides, method: str, seed: int = 0) -> np.ndarray:
    """The picture placed on a larger canvas (`sides` pixels added left, top, right, bottom), the new
    area pre-filled by `method` so the model starts from the picture's own colours, not a flat fill:

    edge-blur      each new pixel takes the nearest edge pixel, blurred more the farther out it is
    smooth         a smooth membrane from the edge colours (image-pyramid push-pull)
    mirror         the picture reflected across its edges
    telea, navier-stokes   OpenCV's inpainting (fast marching / fluid), at up to 1 megapixel then scaled
    noise          noise with the picture's mean and spread
    """
    left, top, right, bottom = sides
    h, w = image.shape[:2]
    if method == "mirror":
        return np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
    canvas = np.zeros((h + top + bottom, w + left + right, 3), np.uint8)
    canvas[top : top + h, left : left + w] = image
    known = np.zeros(canvas.shape[:2], bool)
    known[top : top + h, left : left + w] = True
    if method == "smooth":
        return prefill(canvas, np.where(known, 0, 255).astype(np.uint8))
    if method == "edge-blur":
        distance, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
        nearest = canvas[iy, ix]
        blurred = np.stack([ndimage.gaussian_filter(nearest[..., c].astype(np.float32), 12) for c in range(3)], -1)
        weight = np.clip(distance / 24.0, 0, 1)[..., None]
        out = nearest * (1 - weight) + blurred * weight
        return np.where(known[..., None], canvas, np.clip(np.round(out), 0, 255)).astype(np.uint8)
    if method in ("telea", "navier-stokes"):
        import cv2

        scale = min(1.0, math.sqrt(1_000_000 / canvas.shape[0] / canvas.shape[1]))
        small = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else canvas
        hole = cv2.resize((~known).astype(np.uint8) * 255, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        hole = cv2.dilate(hole, np.ones((3, 3), np.uint8))  # the hole's rim, where resizing mixed in black
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(small, hole, 5, flag)
        if scale < 1:
            filled = cv2.resize(filled, (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.where(known[..., None], canvas, filled)
    if method == "noise":
        rng = np.random.default_rng(seed)
        mean, std = image.reshape(-1, 3).mean(0), image.reshape(-1, 3).std(0)
        noise = np.clip(rng.normal(mean, std, canvas.shape), 0, 255).astype(np.uint8)
        return np.where(known[..., None], canvas, noise)
    raise ValueError(f"unknown pre-fill {method!r}")


# ---- colour from the model, lightness from the photo (colorize) ------------------------------------


def lightness(rgb: np.ndarray) -> np.ndarray:
    """Lab L (0–100) of an RGB uint8 picture."""
    return rgb_to_lab(rgb)[..., 0]


def with_lightness(l_channel: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """RGB uint8 with exactly this lightness and as much of this colour as sRGB can show.

    Colours outside the sRGB gamut are not clipped channel by channel (that would change their
    lightness); their chroma is reduced until they fit, so the photo's own lightness survives."""
    scale = np.ones(l_channel.shape, np.float64)
    for _ in range(12):
        lab = np.concatenate([l_channel[..., None], ab * scale[..., None]], axis=-1)
        linear = _lab_to_linear(lab)
        outside = ((linear < -1e-6) | (linear > 1 + 1e-6)).any(-1)
        if not outside.any():
            break
        scale[outside] *= 0.8
    else:
        scale[outside] = 0.0  # grey of the same lightness is always in gamut
    return lab_to_rgb(np.concatenate([l_channel[..., None], ab * scale[..., None]], axis=-1))


def _lab_to_linear(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    return xyz @ _XYZ_TO_RGB.T


def spread_hints(hints: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour hints (RGBA, alpha = painted) spread to their neighbourhood: Lab a/b of the nearby
    hints (a normalised Gaussian average) and how strongly they apply there (0–1)."""
    alpha = hints[..., 3].astype(np.float64) / 255.0
    ab = rgb_to_lab(np.ascontiguousarray(hints[..., :3]))[..., 1:]
    weight = ndimage.gaussian_filter(alpha, sigma)
    spread = np.stack([ndimage.gaussian_filter(ab[..., c] * alpha, sigma) for c in range(2)], -1) / np.maximum(weight, 1e-9)[..., None]
    # Full strength where the hints are dense (relative to the strongest spot, so a thin stroke
    # counts as much as a broad one), fading to nothing a few sigmas away.
    strength = np.clip(2.0 * weight / weight.max(), 0, 1) if weight.max() > 0 else weight
    return spread, strength
