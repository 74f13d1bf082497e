"""Work done once and kept on disk: decoded images (uint8) and frozen-backbone features (float32).

Decoded images are keyed by the set of image contents and the crop size, so any split, seed or backbone of the
same pictures reuses them. Features are keyed by contents, backbone, weights and input size, so changing only the
head's settings (epochs, learning rate, label smoothing, ...) costs nothing more.
Rows are in sorted-digest order; `rows_for` maps samples to rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from tl_core import limits, settings
from tl_core.data import DatasetManifest
from tl_core.images import UnusableImage, load_square, map_with_progress

IN_MEMORY_LIMIT_BYTES = int(os.environ.get("HEADSTART_IN_MEMORY_LIMIT", 6 * 1024**3))
MEMORY_SHARE = 4  # an array is read into RAM only if it takes at most 1/4 of the memory available at that moment
_loaded: OrderedDict[tuple[str, bool], np.ndarray] = OrderedDict()  # recent arrays (path, in RAM), shared by runs
_lock = threading.Lock()

Progress = Callable[[int, int], None] | None


def digests_in_order(manifest: DatasetManifest) -> list[str]:
    return sorted({s.digest for s in manifest.samples})


def rows_for(manifest: DatasetManifest, samples: Sequence) -> np.ndarray:
    row_of = {d: i for i, d in enumerate(digests_in_order(manifest))}
    return np.array([row_of[s.digest] for s in samples], dtype=np.int64)


def decoded_images(
    manifest: DatasetManifest, size: int, on_progress: Progress = None, in_memory: bool = True
) -> np.ndarray:
    """All images of the data set as an N x size x size x 3 uint8 array: in memory if it fits, else memory-mapped.

    `in_memory=False` memory-maps it anyway: one pass in order (the features) gains nothing from a copy in RAM."""
    path = settings.cache_dir() / "decoded" / f"{manifest.fingerprint()}-{size}.npy"
    if not path.exists():
        _build_decoded(manifest, size, path, on_progress)
    elif on_progress:
        on_progress(len(digests_in_order(manifest)), len(digests_in_order(manifest)))
    return _load(path, in_memory)


def _build_decoded(manifest: DatasetManifest, size: int, path: Path, on_progress: Progress) -> None:
    path_of = {s.digest: s.path for s in manifest.samples}
    files = [path_of[d] for d in digests_in_order(manifest)]
    # 196 KB a picture at 256 px: 9.4 GB for 50,000, said before a byte is written rather than when the disk is full
    limits.check_free_space(path.parent, len(files) * size * size * 3, "Keeping the decoded pictures")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(files), size, size, 3)}
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.truncate(f.tell() + len(files) * size * size * 3)
            _decode_into(f.fileno(), f.tell(), files, size, on_progress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_into(fd: int, offset: int, files: list[str], size: int, on_progress: Progress) -> None:
    """Each picture's square written at its row with pwrite, not through a memory map: the pages of a map being
    written stay in the process's memory (the whole data set by the end, 10 GB for 50,000 pictures at 256 px);
    written to the file they are the page cache's, which the kernel writes out and drops as it needs."""
    row_bytes = size * size * 3

    def decode(row: int) -> None:
        try:
            square = load_square(files[row], size)
        except UnusableImage:  # the file changed since it was checked: a grey square, rather than losing the run
            square = np.full((size, size, 3), 127, dtype=np.uint8)
        os.pwrite(fd, square.tobytes(), offset + row * row_bytes)

    map_with_progress(decode, range(len(files)), on_progress)


def feature_key(manifest: DatasetManifest, backbone: str, weights_id: str, img_size: int) -> str:
    raw = f"{manifest.fingerprint()}|{backbone}|{weights_id}|{img_size}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def feature_path(key: str) -> Path:
    return settings.cache_dir() / "features" / f"{key}.npy"


def cached_features(key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """The features stored under `key`, computing and storing them first if needed; also says if it was a hit."""
    path = feature_path(key)
    if path.exists():
        return _load(path), True
    features = compute().astype(np.float32, copy=False)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npy")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, features)
        os.replace(tmp, path)
    except OSError:
        pass  # no room for the cache (disk full, read-only): this run has its features, the next computes them again
    finally:
        tmp.unlink(missing_ok=True)
    return features, False


def _available_memory() -> int:
    """Bytes of memory the system can give now without swapping (Linux's MemAvailable; else free pages)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemAvailable:")).split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return IN_MEMORY_LIMIT_BYTES * MEMORY_SHARE


def _load(path: Path, in_memory: bool = True) -> np.ndarray:
    """The array at `path`, in RAM when asked and it fits, else memory-mapped; the few most recent are kept.

    In RAM means at most `IN_MEMORY_LIMIT_BYTES` in all and 1/MEMORY_SHARE of the memory available now: a fixed
    6 GB alone would let three cached arrays take 18 GB of a 24 GB server, or one array all of a 8 GB laptop."""
    key = str(path)
    with _lock:
        wanted = [(key, True)] if in_memory else [(key, True), (key, False)]  # one in RAM serves a mapped ask too
        for held in wanted:
            if held in _loaded:
                _loaded.move_to_end(held)
                return _loaded[held]
    size = path.stat().st_size
    in_memory = in_memory and size <= min(IN_MEMORY_LIMIT_BYTES, _available_memory() // MEMORY_SHARE)
    array = np.load(path) if in_memory else np.load(path, mmap_mode="r")
    with _lock:
        _loaded[(key, in_memory)] = array
        while len(_loaded) > 3 or _bytes_in_memory() > IN_MEMORY_LIMIT_BYTES:
            _loaded.popitem(last=False)  # a run still using an array keeps it; the cache only lets go of it
    return array


def _bytes_in_memory() -> int:
    return sum(array.nbytes for (_, in_ram), array in _loaded.items() if in_ram)


def to_batch(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows of the uint8 NHWC array as an NCHW uint8 tensor on `device` (pinned and non-blocking on CUDA)."""
    batch = torch.from_numpy(np.ascontiguousarray(images[rows]))
    batch = batch.permute(0, 3, 1, 2)
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
