"""Image files in and out. Every reader names the offending file in its error.

- `read_image(path)` -> (H, W, 3) uint8 RGB. Grayscale, gray+alpha, RGBA (alpha dropped),
  palette and 16-bit files are converted, never rejected; an EXIF orientation (phone photos) is
  applied, so the array is upright as every viewer shows it. A file that declares more than
  MAX_MEGAPIXELS (env CSGIS_MAX_MEGAPIXELS) is refused before it is decoded.
- `read_label(path)` -> (H, W) uint8 class indices, palette indices kept intact (VOC
  SegmentationClass PNGs: 0..20, 255 = ignore).
- `write_image(path, rgb)` / `write_label(path, label)`: atomic (temporary file, then rename),
  with the permissions the umask gives a new file.
- The write rule (`check_target`, applied by `atomic_write`, so by every writer here and by
  csgis.checkpoint): a target that exists and is not a regular file (a device such as /dev/null,
  a FIFO, a socket, a folder) is refused, and so is a file that a command declared as its input
  (`protect_inputs`: its dataset, ground truths, predictions, checkpoint); links are resolved
  first, and the file a link points at is the one replaced.
- `list_images(folder)`: image files by extension; hidden files (a leading '.': temporary files of
  an interrupted write, macOS '._' files) are not images of the folder.
- `read_gimp_pattern(path)`: a GIMP pattern (`.pat`: a small big-endian header, then raw pixels);
  `read_image` reads `.pat` files with it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Decoding problems are reported by our own errors, which name the file; OpenCV's warnings on
# stderr would only add noise to that one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

MAX_MEGAPIXELS = float(os.environ.get("CSGIS_MAX_MEGAPIXELS", "100"))
# read_image applies MAX_MEGAPIXELS itself, before decoding; Pillow's own check (a warning, or an
# error without the size) would only get in the way of that one clear message.
Image.MAX_IMAGE_PIXELS = None
# EXIF orientation -> the array operation that makes the image upright (as PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(OSError):
    """A file could not be read as an image (missing, empty, corrupt, or unsupported)."""


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    return data


def to_uint8_rgb(img: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Any decoded array (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) -> (H, W, 3) uint8 RGB.

    Alpha is dropped (colour channels kept as stored). 16-bit values are rounded to 8 bits
    (x / 257), floats are assumed in [0, 1]. Channel order of 3/4-channel input must be BGR(A).
    """
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3:
        raise ImageReadError(f"{source}: unsupported image shape {img.shape}")
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(f"{source}: unsupported number of channels ({channels})")


def _header(path: Path) -> tuple[tuple[int, int] | None, int]:
    """((width, height) or None when Pillow cannot read the header, EXIF orientation 1..8), without
    decoding pixels."""
    try:
        with Image.open(path) as pil:
            if pil.format == "PNG":  # its getexif() would decode the image to find a late eXIf chunk
                exif = Image.Exif()
                if pil.info.get("exif"):
                    exif.load(pil.info["exif"])
            else:
                exif = pil.getexif()
            orientation = exif.get(0x0112, 1)
            return pil.size, orientation if orientation in _ORIENTATION else 1
    except Exception:
        return None, 1


GIMP_PATTERN_MAGIC = b"GPAT"


def read_gimp_pattern(path: str | os.PathLike) -> np.ndarray:
    """A GIMP pattern file as (H, W, 3) uint8 RGB (alpha dropped, gray made 3-channel).

    Layout (GIMP's devel-docs/pat.txt): six big-endian uint32 (header size, version 1, width, height,
    bytes per pixel 1-4, the magic 'GPAT'), the pattern's UTF-8 name up to the header size, then
    width x height x bytes of pixels, row by row (gray, gray+alpha, RGB or RGBA).
    """
    path = Path(path)
    data = _read_bytes(path).tobytes()
    if len(data) < 24:
        raise ImageReadError(f"{path}: not a GIMP pattern (only {len(data)} bytes)")
    header, version, width, height, depth = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 20, 4))
    if data[20:24] != GIMP_PATTERN_MAGIC or version != 1:
        raise ImageReadError(f"{path}: not a GIMP pattern (no 'GPAT' version-1 header)")
    if depth not in (1, 2, 3, 4) or not (0 < width <= 1 << 16 and 0 < height <= 1 << 16) or header < 24:
        raise ImageReadError(f"{path}: GIMP pattern header out of range ({width}x{height}, {depth} bytes a pixel)")
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise ImageReadError(f"{path}: declares {width}x{height} pixels, more than {MAX_MEGAPIXELS:g} megapixels")
    size = width * height * depth
    if len(data) < header + size:
        raise ImageReadError(f"{path}: GIMP pattern truncated ({len(data) - header} of {size} pixel bytes)")
    pixels = np.frombuffer(data, np.uint8, size, header).reshape(height, width, depth)
    rgb = np.repeat(pixels[..., :1], 3, axis=2) if depth <= 2 else pixels[..., :3]
    return np.ascontiguousarray(rgb)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any common image file as (H, W, 3) uint8 RGB, upright; raise ImageReadError naming the file."""
    path = Path(path)
    if path.suffix.lower() == ".pat":
        return read_gimp_pattern(path)
    data = _read_bytes(path)
    size, orientation = _header(path)
    if size is not None and size[0] * size[1] > MAX_MEGAPIXELS * 1e6:
        raise ImageReadError(f"{path}: declares {size[0]}x{size[1]} pixels, more than {MAX_MEGAPIXELS:g} megapixels "
                             f"(set CSGIS_MAX_MEGAPIXELS to read larger images)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        # OpenCV cannot decode a few formats (e.g. some palette/GIF files): try Pillow.
        try:
            with Image.open(path) as pil:
                rgb = np.asarray(pil.convert("RGB"), dtype=np.uint8)
        except Exception:
            raise ImageReadError(f"{path}: not a readable image file") from None
    else:
        rgb = to_uint8_rgb(img, str(path))
    if orientation in _ORIENTATION:
        rgb = _ORIENTATION[orientation](rgb)
    return np.ascontiguousarray(rgb)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header (decoding the whole file only when Pillow
    cannot read the header); ImageReadError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    size, orientation = _header(path)
    if size is None:
        height, width = read_image(path).shape[:2]
        return width, height
    return size[::-1] if orientation in (5, 6, 7, 8) else size  # as read_image returns it: upright


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index label (palette or 8-bit gray PNG) as (H, W) uint8; indices kept."""
    path = Path(path)
    _read_bytes(path)  # clear errors for missing / empty files
    try:
        with Image.open(path) as pil:
            if pil.mode in ("P", "L"):
                return np.asarray(pil, dtype=np.uint8).copy()
            if pil.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(pil)
                if arr.max(initial=0) > 255:
                    raise ImageReadError(f"{path}: label values above 255 are not class indices")
                return arr.astype(np.uint8)
            raise ImageReadError(
                f"{path}: label must be a palette or single-channel PNG of class indices, "
                f"got mode {pil.mode} (a colour-rendered label has lost its class indices)")
    except ImageReadError:
        raise
    except Exception:
        raise ImageReadError(f"{path}: not a readable label image") from None


class WriteRefused(OSError):
    """A target the write rule refuses (message names it and why)."""


_PROTECTED_FILES: set[Path] = set()
_PROTECTED_FOLDERS: set[Path] = set()


def protect_inputs(*paths) -> None:
    """Declare files or folders this process reads: no writer here may replace them (a folder's
    files existing at write time are protected; new files may still be made in it)."""
    for path in paths:
        if path is None or str(path) == "":
            continue
        resolved = Path(path).resolve()
        (_PROTECTED_FOLDERS if resolved.is_dir() else _PROTECTED_FILES).add(resolved)


def clear_protected() -> None:
    """Forget every protect_inputs declaration (tests; a long-lived process between commands)."""
    _PROTECTED_FILES.clear()
    _PROTECTED_FOLDERS.clear()


def check_target(path: str | os.PathLike) -> Path:
    """The resolved path a writer may replace; WriteRefused when the write rule (module docstring) forbids it."""
    resolved = Path(path).resolve()
    if resolved.exists() and not resolved.is_file():
        kind = ("a folder" if resolved.is_dir() else "a device" if resolved.is_char_device() or resolved.is_block_device()
                else "a FIFO" if resolved.is_fifo() else "a socket" if resolved.is_socket() else "not a regular file")
        raise WriteRefused(f"{path} is {kind}, not a regular file; refusing to replace it")
    if resolved in _PROTECTED_FILES or (resolved.exists() and any(f in resolved.parents for f in _PROTECTED_FOLDERS)):
        raise WriteRefused(f"{path} is an input of this command; refusing to replace it (choose another output)")
    return resolved


def new_file_mode() -> int:
    """The permissions a new file gets under the process's umask (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call write_fn(tmp_path) on a temporary file beside `path`, then rename it over `path`
    (after the write rule, check_target: for a link, over the file it points at)."""
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp makes it 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8, newlines as given) atomically; returns the path."""
    path = Path(path)

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_write(path, _write)
    return path


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Byte-exact copy of src to dst, atomically."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write (H, W, 3) or (H, W) uint8 atomically; the format follows the file extension."""
    path = Path(path)
    if rgb.dtype != np.uint8:
        raise ValueError(f"write_image({path}): expected uint8, got {rgb.dtype}")
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb

    def _write(tmp: str) -> None:
        ok, buf = cv2.imencode(path.suffix or ".png", img)
        if not ok:
            raise OSError(f"{path}: cannot encode image with extension '{path.suffix}'")
        buf.tofile(tmp)

    atomic_write(path, _write)


def write_label(path: str | os.PathLike, label: np.ndarray, palette: list[int] | None = None) -> None:
    """Write (H, W) uint8 class indices as a palette PNG (VOC palette by default), atomically."""
    path = Path(path)
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"write_label({path}): expected (H, W) uint8, got {label.dtype} {label.shape}")
    pil = Image.fromarray(label, mode="P")
    pil.putpalette(palette or voc_palette())

    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def voc_palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map (flat list of 3*n ints), as used by SegmentationClass PNGs."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under a folder (by extension), sorted."""
    root = Path(root)
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.relative_to(root).name.startswith("."))


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies inside it (after resolving links and '..')."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write a probe file into it; OSError (naming the folder) when that fails.

    Commands call it before their work, so an unwritable output is found before hours of smoothing.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError as e:
        raise OSError(f"cannot write into {folder}: {e.strerror or e}") from None
