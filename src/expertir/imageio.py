"""Reading and writing images with Pillow (OpenCV only for 16-bit colour, which Pillow lacks).

Every image is handed to the models as float32 RGB in [0, 1], shape H×W×3. What the
network does not see is kept aside and put back on writing: the alpha channel, whether the
input was gray, its bit depth (8 or 16), and the photo's metadata:

* **EXIF** (camera, date, GPS, ...) is kept. Its orientation is applied to the pixels on
  reading and then removed from the EXIF, so the output is upright in every viewer and
  never rotated twice.
* The **ICC colour profile** is kept (where the output format can carry one and its colour
  space matches the output's), so colours are interpreted as in the input.
* **JPEG** outputs are written at quality ``JPEG_QUALITY`` with the input's chroma
  subsampling (4:4:4, 4:2:2 or 4:2:0) when it was a JPEG.

PNG, JPEG, 8-bit TIFF and WebP carry both; 16-bit PNG gets them as ``iCCP``/``eXIf``
chunks; 16-bit TIFF (written by OpenCV) and BMP carry neither. Palette, CMYK and other
modes are converted to RGB. Files are written atomically: a failed or interrupted write
leaves no partial file. Large images are converted in row blocks, so reading and writing
hold no float temporaries beyond the image itself.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from expertir.atomic import atomic_path
from expertir.errors import ExpertirError, ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_SIXTEEN_BIT_FORMATS = (".png", ".tif", ".tiff")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                ".bmp": "BMP", ".webp": "WEBP"}
JPEG_QUALITY = 95
#: Values handled per block when converting between uint8/16 and float (bounds temporaries).
_BLOCK = 1 << 22


@dataclass
class LoadedImage:
    """An image ready for a model, plus what is needed to write the result back alike."""

    path: Path
    rgb: np.ndarray  # float32, H×W×3, [0, 1]
    alpha: np.ndarray | None = None  # float32, H×W, [0, 1]
    bit_depth: int = 8
    gray: bool = False
    mode: str = "RGB"  # Pillow mode of the file as read
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied and removed
    jpeg_subsampling: int | None = None  # Pillow's code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` (by extension), sorted."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) >= 26 and head[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    """16-bit colour via OpenCV (Pillow reads those as 8-bit); None if not 16-bit colour."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    order = [2, 1, 0, 3][: arr.shape[2]]  # BGR(A) -> RGB(A)
    return arr[..., order].astype(np.float32) / 65535.0


def read_image(path: str | Path, max_pixels: int | None = None) -> LoadedImage:
    """Read any supported image; raise :class:`ImageReadError` with a one-line reason.

    Images larger than Pillow's decompression-bomb limit are refused from their header,
    before any pixel is decoded; ``max_pixels`` sets a lower limit of the caller's own
    (``expertir serve`` uses it to cap the size of what a browser may send).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ImageReadError(path, f"{im.width}×{im.height} ({im.width * im.height / 1e6:.1f} MP) "
                                           f"is over the limit of {max_pixels / 1e6:.1f} MP")
            im.load()
            icc = im.info.get("icc_profile") or None
            sampling = JpegImagePlugin.get_sampling(im) if im.format == "JPEG" else -1
            ImageOps.exif_transpose(im, in_place=True)  # also drops the orientation tag
            exif = im.info.get("exif") or None
            mode = im.mode
            tiff_bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
            arr16 = None
            if mode in ("RGB", "RGBA") and path.suffix.lower() in _SIXTEEN_BIT_FORMATS:
                sixteen = (_png_bit_depth(path) == 16 if path.suffix.lower() == ".png"
                           else bool(tiff_bits) and max(np.atleast_1d(tiff_bits)) == 16)
                arr16 = _read_16bit_colour(path) if sixteen else None
            if arr16 is not None:
                rgb, alpha = arr16[..., :3], (arr16[..., 3] if arr16.shape[2] == 4 else None)
                loaded = LoadedImage(path, np.ascontiguousarray(rgb), alpha, 16, False, mode)
            else:
                loaded = _from_pil(path, im)
            loaded.icc_profile, loaded.exif = icc, exif
            loaded.jpeg_subsampling = sampling if sampling in (0, 1, 2) else None
            return loaded
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image file") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or "image file is" in reason.lower():
            reason = f"truncated or corrupt image ({reason})"
        raise ImageReadError(path, f"cannot decode image: {reason}") from None


def _to_float(arr: np.ndarray, top: float) -> np.ndarray:
    """``arr / top`` as float32, converted block by block (no full-size temporaries)."""
    out = np.empty(arr.shape, np.float32)
    step = max(1, _BLOCK // max(1, arr[0].size))
    for i in range(0, len(arr), step):
        np.divide(arr[i:i + step], np.float32(top), out=out[i:i + step])
    return out


def _from_pil(path: Path, im: Image.Image) -> LoadedImage:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
        return LoadedImage(path, np.repeat(arr[..., None], 3, axis=2), None, 16, True, mode)
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top, 0, 1)
        return LoadedImage(path, np.repeat(arr[..., None], 3, axis=2), None,
                           16 if top > 255 else 8, True, mode)
    if mode in ("1", "L"):
        arr = _to_float(np.asarray(im.convert("L")), 255.0)
        return LoadedImage(path, np.repeat(arr[..., None], 3, axis=2), None, 8, True, mode)
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0
        rgb = rgba.convert("RGB")
    else:
        rgb = im if mode == "RGB" else im.convert("RGB")  # P, CMYK, YCbCr, ...
    arr = _to_float(np.asarray(rgb), 255.0)
    return LoadedImage(path, arr, alpha, 8, mode == "LA", mode)


def load_rgb(path: str | Path) -> np.ndarray:
    """Float32 H×W×3 RGB in [0, 1] (gray replicated to three channels)."""
    return read_image(path).rgb


def _quantise(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round ``arr`` (floats in [0, 1]) to uint8 or uint16, block by block."""
    top = 65535 if bit_depth == 16 else 255
    out = np.empty(arr.shape, np.uint16 if bit_depth == 16 else np.uint8)
    step = max(1, _BLOCK // max(1, arr[0].size))
    for i in range(0, len(arr), step):
        block = np.clip(arr[i:i + step], 0.0, 1.0) * top
        out[i:i + step] = np.round(block, out=block)
    return out


def save_rgb(path: str | Path, rgb: np.ndarray, bit_depth: int = 8) -> None:
    """Write float RGB in [0, 1] (or H×W gray) to ``path``; format from the extension."""
    _write(Path(path), rgb, None, bit_depth, gray=rgb.ndim == 2, mode="RGB")


def write_image(path: str | Path, rgb: np.ndarray, like: LoadedImage) -> None:
    """Write a restored image the way ``like`` was read: alpha, gray-ness, bit depth, ICC
    profile, EXIF and JPEG subsampling (see the module doc)."""
    if like.gray:
        rgb = rgb.mean(axis=2)
    _write(Path(path), rgb, like.alpha, like.bit_depth, like.gray, like.mode,
           like.icc_profile, like.exif, like.jpeg_subsampling)


_ICC_SPACES = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY", "I;16": b"GRAY",
               "CMYK": b"CMYK"}


def _icc_for(mode: str, icc: bytes | None) -> bytes | None:
    """``icc`` if its colour space (header bytes 16-19) is that of a ``mode`` image."""
    return icc if icc and len(icc) >= 20 and icc[16:20] == _ICC_SPACES.get(mode) else None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """``png`` with ``iCCP`` and ``eXIf`` chunks inserted after IHDR (8 + 25 bytes)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    return png[:33] + extra + png[33:]


def _write(path: Path, arr: np.ndarray, alpha: np.ndarray | None, bit_depth: int,
           gray: bool, mode: str, icc: bytes | None = None, exif: bytes | None = None,
           subsampling: int | None = None) -> None:
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ExpertirError(f"{path}: unsupported output format {ext!r} "
                            f"(use one of {', '.join(IMAGE_EXTENSIONS)})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if bit_depth == 16 and ext not in _SIXTEEN_BIT_FORMATS:
        bit_depth = 8  # JPEG, BMP and WebP are 8-bit formats
    path.parent.mkdir(parents=True, exist_ok=True)
    if alpha is not None and ext in (".jpg", ".jpeg", ".bmp"):
        alpha = None  # these formats have no alpha channel
    if bit_depth == 16:
        if arr.ndim == 2 and alpha is None:
            im = Image.fromarray(_quantise(arr, 16))  # mode I;16
            _save(im, path, icc, exif, subsampling)
            return
        import cv2

        planes = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        if alpha is not None:
            planes = np.concatenate([planes, alpha[..., None]], axis=2)
        q = _quantise(planes, 16)
        order = [2, 1, 0, 3][: q.shape[2]]
        ok, encoded = cv2.imencode(ext, q[..., order])
        if not ok:
            raise ExpertirError(f"{path}: could not write 16-bit image")
        data = encoded.tobytes()
        if ext == ".png":
            data = _png_with_metadata(data, _icc_for("RGB", icc), exif)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
        return
    q = _quantise(arr, 8)
    im = Image.fromarray(q, "L" if q.ndim == 2 else "RGB")
    del q
    if alpha is not None:
        im = im.convert("LA" if im.mode == "L" else "RGBA")
        im.putalpha(Image.fromarray(_quantise(alpha, 8), "L"))
    elif mode == "CMYK" and ext in (".jpg", ".jpeg", ".tif", ".tiff"):
        im = im.convert("CMYK")
    _save(im, path, icc, exif, subsampling)


def _save(im: Image.Image, path: Path, icc: bytes | None, exif: bytes | None,
          subsampling: int | None) -> None:
    """Save with Pillow, atomically, with the metadata the format can carry."""
    fmt = _PIL_FORMATS[path.suffix.lower()]
    kwargs: dict = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = JPEG_QUALITY
    if fmt == "JPEG" and subsampling is not None and im.mode in ("RGB", "RGBA"):
        kwargs["subsampling"] = subsampling
    if fmt != "BMP":
        if _icc_for(im.mode, icc):
            kwargs["icc_profile"] = icc
        if exif:
            kwargs["exif"] = exif
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **kwargs)
