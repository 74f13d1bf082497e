"""Reading one image file of any common format and mode into RGB, and the fixed-size crop the engine caches.

Every path that turns a file into pixels (scanning, the decode cache, prediction, export) goes through here, so
the model sees the same pixels in training and in use.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from tl_core import limits
from tl_core.errors import HeadstartError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MIN_SIDE = 16  # pixels; smaller pictures carry too little for any backbone
IN_FLIGHT_PER_WORKER = 4  # tasks queued per thread: enough to keep each busy, few enough to bound memory

T = TypeVar("T")
R = TypeVar("R")

# Pillow warns above its own limit; ours is lower and checked before decoding, so its warning adds nothing.
Image.MAX_IMAGE_PIXELS = None


class UnusableImage(HeadstartError):
    """A file that cannot be used as a training image; the message is the reason shown to the user."""


def _is_empty(source) -> bool:
    """A file (or an upload's bytes) of 0 bytes: said as such, not as 'not an image'."""
    if hasattr(source, "getbuffer"):
        return source.getbuffer().nbytes == 0
    if isinstance(source, str | os.PathLike):
        with contextlib.suppress(OSError):  # a missing file is said where it is opened
            return Path(source).stat().st_size == 0
    return False


def open_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode `path` to an RGB image, upright per its EXIF orientation.

    `draft_size` lets JPEG decode at a reduced scale that is still at least that many pixels on each side.
    Raises UnusableImage with a sentence for the user when the file is not usable.
    """
    if _is_empty(path):
        raise UnusableImage("the file is empty (0 bytes): it was not copied or saved completely; copy it again")
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise UnusableImage("the file is missing") from None
    except (OSError, ValueError, SyntaxError):
        raise UnusableImage("not an image file (or a format Headstart cannot read)") from None
    width, height = img.size
    max_pixels = limits.current().pixels  # beyond it a file could exhaust memory when decoded ("decompression bomb")
    if width * height > max_pixels:
        raise UnusableImage(
            f"too large to decode safely ({width}x{height} pixels, the limit is {max_pixels // 1_000_000} "
            "megapixels): shrink it first"
        )
    if min(width, height) < MIN_SIDE:
        raise UnusableImage(f"too small ({width}x{height} pixels; at least {MIN_SIDE} on each side is needed)")
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF quirks are common and harmless
            img = ImageOps.exif_transpose(img)
        img.load()
        return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UnusableImage(f"corrupt or truncated image ({exc})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(img)), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float grey levels to 0..255 without clipping them to white."""
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if is_float and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif not is_float and low >= 0 and high <= 255:
        scaled = values
    elif not is_float and low >= 0 and high <= 65535:
        # 10-, 12- and 14-bit data stored in 16-bit files (microscopes, X-ray detectors) keep their full range.
        depth = next(bits for bits in (10, 12, 14, 16) if high < 2**bits)
        scaled = values * (255.0 / (2**depth - 1))
    else:
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def square_crop(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size`, then take the centre square: an HxWx3 uint8 array."""
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_square(path: str | Path, size: int) -> np.ndarray:
    """The cached form of an image: upright RGB, shorter side `size`, centre square (size x size x 3 uint8)."""
    return square_crop(open_rgb(path, draft_size=size), size)


def map_with_progress(fn: Callable[[T], R], items: Sequence[T], on_progress=None, every: int = 16) -> list[R]:
    """fn over items on a few threads (Pillow decodes without the GIL), in order, reporting progress.

    At most a few tasks per thread are queued at a time (`Executor.map` would queue them all at once: on 50,000
    pictures, 50,000 futures and their results waiting in memory). If on_progress raises (a stop request), the work
    still queued is dropped rather than waited for.
    """
    workers = max(1, min(8, (os.cpu_count() or 2) * 2))
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[R]] = deque()
    results: list[R] = []

    def take_oldest() -> None:
        results.append(pending.popleft().result())
        done = len(results)
        if on_progress and (done % every == 0 or done == len(items)):
            on_progress(done, len(items))

    try:
        for item in items:
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                take_oldest()
            pending.append(pool.submit(fn, item))
        while pending:
            take_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
