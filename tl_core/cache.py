"""Work done once and kept on disk: decoded images (uint8) and frozen-backbone features (float32).

Decoded images are keyed by the set of image contents and the crop size, so any split, seed or backbone of the
same pictures reuses them. Features are keyed by contents, backbone, weights and input size, so changing only the
head's settings (epochs, learning rate, label smoothing, ...) costs nothing more.
Rows are in sorted-digest order; `rows_for` maps samples to rows.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from tl_core import settings
from tl_core.data import DatasetManifest
from tl_core.images import UnusableImage, load_square, map_with_progress

IN_MEMORY_LIMIT_BYTES = int(os.environ.get("HEADSTART_IN_MEMORY_LIMIT", 6 * 1024**3))
_loaded: OrderedDict[str, np.ndarray] = OrderedDict()  # the few most recent arrays, shared by runs in one process
_lock = threading.Lock()

Progress = Callable[[int, int], None] | None


def digests_in_order(manifest: DatasetManifest) -> list[str]:
    return sorted({s.digest for s in manifest.samples})


def rows_for(manifest: DatasetManifest, samples: Sequence) -> np.ndarray:
    row_of = {d: i for i, d in enumerate(digests_in_order(manifest))}
    return np.array([row_of[s.digest] for s in samples], dtype=np.int64)


def decoded_images(manifest: DatasetManifest, size: int, on_progress: Progress = None) -> np.ndarray:
    """All images of the data set as an N x size x size x 3 uint8 array: in memory if it fits, else memory-mapped."""
    path = settings.cache_dir() / "decoded" / f"{manifest.fingerprint()}-{size}.npy"
    if not path.exists():
        _build_decoded(manifest, size, path, on_progress)
    elif on_progress:
        on_progress(len(digests_in_order(manifest)), len(digests_in_order(manifest)))
    return _load(path)


def _build_decoded(manifest: DatasetManifest, size: int, path: Path, on_progress: Progress) -> None:
    path_of = {s.digest: s.path for s in manifest.samples}
    files = [path_of[d] for d in digests_in_order(manifest)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3))
        _decode_into(array, files, size, on_progress)
        array.flush()
        del array  # closes the memory map before the rename
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_into(array: np.ndarray, files: list[str], size: int, on_progress: Progress) -> None:
    def decode(row: int) -> None:
        try:
            array[row] = load_square(files[row], size)
        except UnusableImage:
            array[row] = 127  # the file changed since it was checked: a grey square, rather than losing the run

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
    features = compute().astype(np.float32)
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


def _load(path: Path) -> np.ndarray:
    key = str(path)
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    array = np.load(path) if path.stat().st_size <= IN_MEMORY_LIMIT_BYTES else np.load(path, mmap_mode="r")
    with _lock:
        _loaded[key] = array
        while len(_loaded) > 3:
            _loaded.popitem(last=False)
    return array


def to_batch(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows of the uint8 NHWC array as an NCHW uint8 tensor on `device` (pinned and non-blocking on CUDA)."""
    batch = torch.from_numpy(np.ascontiguousarray(images[rows]))
    batch = batch.permute(0, 3, 1, 2)
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
