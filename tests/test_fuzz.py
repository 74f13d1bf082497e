"""Hostile input, generated: random class names (any script, markdown, HTML), good and broken files, links out of the
folder, the same trees zipped. Whatever comes, the scanner either explains in a sentence or returns exactly the good
pictures, each inside the folder, and says why it left out each other file."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tl_core.data import IGNORED_NAMES, SPLIT_FOLDERS, scan_dataset
from tl_core.errors import HeadstartError

CLASS_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="/\\\0"),
    min_size=1,
    max_size=12,
).filter(
    lambda s: (
        s.strip() == s
        and s not in (".", "..")
        and not s.startswith(".")
        and s.lower() not in SPLIT_FOLDERS
        and s not in IGNORED_NAMES
        and len(s.encode()) < 120
    )
)
KINDS = ("picture", "truncated", "empty", "text", "link_out", "html_named")
TREE = st.dictionaries(CLASS_NAME, st.lists(st.sampled_from(KINDS), min_size=1, max_size=4), min_size=1, max_size=4)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _picture(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path, format="PNG")


def _build(tree: dict[str, list[str]], base: Path) -> tuple[Path, set[str], set[str]]:
    """The folder; the relative paths of its good pictures; of the files that must be left out with a reason."""
    root, outside = base / "data", base / "elsewhere"
    outside.mkdir()
    _picture(outside / "secret.png", 999)
    good, bad = set(), set()
    for c, (name, kinds) in enumerate(tree.items()):
        (root / name).mkdir(parents=True)
        for i, kind in enumerate(kinds):
            path = (
                root
                / name
                / (f"<img src=x onerror=alert({i})> *{i}* [x](y).png" if kind == "html_named" else f"{kind}{i}.png")
            )
            if kind in ("picture", "html_named"):
                _picture(path, c * 100 + i)
                good.add(path.relative_to(root).as_posix())
                continue
            if kind == "truncated":
                _picture(path, 500 + c * 100 + i)
                path.write_bytes(path.read_bytes()[:40])
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "text":
                path.with_suffix(".txt").write_text("# not a picture\n<script>alert(1)</script>")
                path = path.with_suffix(".txt")
            elif kind == "link_out":
                path.symlink_to(outside / "secret.png")
            bad.add(path.relative_to(root).as_posix())
    return root, good, bad


def _check(source: Path, good: set[str], bad: set[str], tree: dict) -> None:
    try:
        manifest = scan_dataset(source)
    except HeadstartError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        assert len([n for n, kinds in tree.items() if any(k in ("picture", "html_named") for k in kinds)]) < 2 or (
            "at least" in str(exc)
        ), str(exc)
        return
    assert set(manifest.class_names) <= set(tree)  # names exactly as given, never rewritten
    used = {s.relpath for s in manifest.samples}
    kept_classes = set(manifest.class_names)
    assert used == {g for g in good if g.split("/")[0] in kept_classes}
    for sample in manifest.samples:
        assert Path(sample.path).resolve().is_relative_to(Path(manifest.root).resolve())
        assert "secret" not in sample.path
    skipped = {p.path: p.reason for p in manifest.skipped}
    for path in bad:
        if path.split("/")[0] in kept_classes:
            assert skipped.get(path), f"{path} was left out without a reason"
    for path, reason in skipped.items():
        if path.rsplit("/", 1)[-1].startswith("link_out"):
            assert "outside the data set" in reason or "symbolic links inside a zip are not followed" in reason


@FUZZ
@given(tree=TREE)
def test_any_folder_is_used_exactly_or_explained(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root, good, bad = _build(tree, Path(tmp))
        _check(root, good, bad, tree)


@FUZZ
@given(tree=TREE)
def test_any_zip_is_used_exactly_or_explained(tree):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, good, bad = _build(tree, base)
        archive = base / "upload.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(root.rglob("*")):
                if path.is_symlink():
                    info = zipfile.ZipInfo(path.relative_to(root).as_posix())
                    info.external_attr = 0o120777 << 16  # a symbolic link member
                    zf.writestr(info, str(base / "elsewhere" / "secret.png"))
                elif path.is_file():
                    zf.write(path, path.relative_to(root).as_posix())
            zf.writestr("../escape.png", b"outside")  # a member that tries to climb out
        _check(archive, good, bad - {p for p in bad if "link_out" in p}, tree)
        assert not (base / "escape.png").exists()
