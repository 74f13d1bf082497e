"""Large data sets with bounded memory: the work queued at once, the decoded-image cache as it is built and as it is
held, and the features' pass over it. Tiny pictures stand in for 50,000 real ones; each bound is a value, not a time."""

from __future__ import annotations

import os
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tl_core import cache, images
from tl_core.data import scan_dataset


def _tiny_dataset(root: Path, per_class: int, classes: int = 2, side: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


class _Counted(Sequence):
    """A sequence that counts how many of its items have been taken so far."""

    def __init__(self, n: int) -> None:
        self.n, self.taken = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return i

    def __iter__(self):
        for i in range(self.n):
            self.taken += 1
            yield i


def test_map_with_progress_queues_a_few_tasks_not_all():
    items = _Counted(5000)
    taken_at_first_result = []

    def on_progress(done: int, total: int) -> None:
        if not taken_at_first_result:
            taken_at_first_result.append(items.taken)

    results = images.map_with_progress(lambda i: i * 2, items, on_progress, every=1)
    assert results == [i * 2 for i in range(5000)]  # in order, every one
    workers = max(1, min(8, (os.cpu_count() or 2) * 2))
    assert taken_at_first_result[0] <= images.IN_FLIGHT_PER_WORKER * workers + 1  # Executor.map: all 5,000


def test_map_with_progress_memory_does_not_grow_with_the_tasks():
    """20,000 tasks returning None: what stays is the list of results, not 20,000 futures (about 5 MB of them)."""
    tracemalloc.start()
    try:
        images.map_with_progress(lambda i: None, range(20_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's list of the process's mappings")
def test_building_the_decoded_cache_maps_no_file_into_the_process(tmp_path, monkeypatch):
    """Every page written through a memory map stays in the process's memory (RSS) until the kernel is short of it:
    10 GB for 50,000 pictures at 256 px (measured, docs/BENCHMARKS.md). Written to the file, they are the page
    cache's. So while the cache is built, no part of it may be mapped into the process."""
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    manifest = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=100))
    mapped_while_building = []

    def on_progress(done: int, total: int) -> None:
        maps = Path("/proc/self/maps").read_text().splitlines()
        mapped_while_building.extend(line for line in maps if str(tmp_path / "cache") in line)

    array = cache.decoded_images(manifest, 64, on_progress)
    assert mapped_while_building == []
    assert array.shape == (200, 64, 64, 3) and 100 < float(array.mean()) < 155  # random pixels, not zeros


def test_decoded_cache_rows_are_the_pictures(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    manifest = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=20, side=32))
    array = cache.decoded_images(manifest, 32)
    rows = cache.rows_for(manifest, manifest.samples)
    for sample, row in zip(manifest.samples, rows, strict=True):
        assert np.array_equal(array[row], images.load_square(sample.path, 32))


def test_arrays_in_memory_are_bounded_in_total_and_by_the_memory_available(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", type(cache._loaded)())
    manifest = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=10))
    one = 20 * 48 * 48 * 3
    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT_BYTES", int(1.5 * one))
    first = cache.decoded_images(manifest, 48)
    second = cache.decoded_images(manifest, 47)  # a second array: both would be 1.96x one, over the limit
    assert not isinstance(first, np.memmap) and not isinstance(second, np.memmap)
    assert cache._bytes_in_memory() <= cache.IN_MEMORY_LIMIT_BYTES
    assert [in_ram for (_, in_ram) in cache._loaded] == [True]  # the older one let go

    monkeypatch.setattr(cache, "_loaded", type(cache._loaded)())
    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT_BYTES", 100 * one)
    monkeypatch.setattr(cache, "_available_memory", lambda: 2 * one)  # a quarter of it is too little
    assert isinstance(cache.decoded_images(manifest, 48), np.memmap)


def test_features_read_the_pictures_memory_mapped_and_match_the_model(tmp_path, monkeypatch):
    from tl_core.backbones import create_backbone
    from tl_core.features import pretrained_features
    from tl_core.preprocess import InputSpec, to_model_input

    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", type(cache._loaded)())
    manifest = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=40, side=32))
    backbone = create_backbone("test_efficientnet", 2, "none", 0, 32)
    spec = InputSpec.from_data_config(backbone.data_config, 32)
    features, hit = pretrained_features(manifest, "test_efficientnet", backbone, spec, torch.device("cpu"))
    assert not hit and features.shape[0] == 80
    assert [in_ram for (_, in_ram) in cache._loaded] == [False]  # one pass in order: no copy in RAM

    pictures = cache.decoded_images(manifest, spec.cache_size)
    model = backbone.model.eval()
    with torch.no_grad():
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(pictures)).permute(0, 3, 1, 2), spec)
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    again, hit = pretrained_features(manifest, "test_efficientnet", backbone, spec, torch.device("cpu"))
    assert hit and torch.equal(again, features)


@pytest.mark.parametrize("total", [7, 50_000])
def test_scan_progress_redraws_at_each_percent_only(total):
    from pages._common import scan_progress

    class Where:
        def __init__(self) -> None:
            self.drawn: list[tuple[float, str]] = []

        def progress(self, value: float, text: str) -> None:
            self.drawn.append((value, text))

    where = Where()
    report = scan_progress(where)
    for done in [*range(25, total, 25), total]:
        report(done, total)
    assert len(where.drawn) <= 101
    assert where.drawn[-1] == (1.0, f"Checked {total:,} of {total:,} pictures...")


def test_no_room_for_the_decoded_cache_is_said_before_writing(tmp_path, monkeypatch):
    from tl_core.limits import LimitReached

    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    manifest = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=5))
    monkeypatch.setenv("HEADSTART_MIN_FREE_GB", "1000000")
    with pytest.raises(LimitReached, match="Keeping the decoded pictures needs"):
        cache.decoded_images(manifest, 64)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


class _PageRunStopped(BaseException):
    """Stands in for Streamlit's StopException: what a page run's next drawing raises once the person clicked."""


def _slow_scan(monkeypatch, tmp_path, release: threading.Event) -> list:
    """scan_dataset replaced by one that says it is half done, then waits for `release`; returns its calls."""
    real = scan_dataset(_tiny_dataset(tmp_path / "data", per_class=5))
    calls = []

    def slow(path, on_progress=None, **kwargs):
        calls.append(path)
        on_progress(1, 2)
        assert release.wait(30)
        return real

    monkeypatch.setattr("tl_core.data.scan_dataset", slow)
    return calls


def test_a_scan_runs_once_for_every_page_run_that_asks_and_shows_its_progress(tmp_path, monkeypatch):
    from pages import _common

    _common._scans.clear()
    release = threading.Event()
    calls = _slow_scan(monkeypatch, tmp_path, release)
    drawn, results = [], []

    def first_progress(done: int, total: int) -> None:
        drawn.append((done, total))
        release.set()  # both page runs are waiting by now: let the scan finish

    waiting = threading.Thread(target=lambda: results.append(_common.scan(str(tmp_path), 0.2, 0.0, 0)))
    waiting.start()
    results.append(_common.scan(str(tmp_path), 0.2, 0.0, 0, on_progress=first_progress))
    waiting.join(30)
    assert calls == [str(tmp_path)] and drawn[0] == (1, 2)
    assert len(results) == 2 and results[0] is not results[1]  # each its own copy
    assert [s.relpath for s in results[0].samples] == [s.relpath for s in results[1].samples]
    _common.scan(str(tmp_path), 0.2, 0.0, 0)
    assert len(calls) == 1  # kept


def test_a_page_run_stopped_during_a_scan_leaves_it_running_for_the_next(tmp_path, monkeypatch):
    from pages import _common

    _common._scans.clear()
    release = threading.Event()
    calls = _slow_scan(monkeypatch, tmp_path, release)

    def clicked(done: int, total: int) -> None:
        raise _PageRunStopped

    with pytest.raises(_PageRunStopped):
        _common.scan(str(tmp_path), 0.2, 0.0, 0, on_progress=clicked)
    release.set()
    manifest = _common.scan(str(tmp_path), 0.2, 0.0, 0)
    assert len(manifest.samples) == 10 and len(calls) == 1  # the check went on; the next run did not begin again
