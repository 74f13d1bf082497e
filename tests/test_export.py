"""The exported bundle reads pictures exactly as Headstart does, awkward ones included."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image

from tl_core.export import export_bundle
from tl_core.images import open_rgb
from tl_core.predict import Predictor


def test_bundle_matches_headstart_on_twelve_bit_and_broken_files(finished_run, digits_dir, tmp_path):
    digit = np.asarray(open_rgb(sorted((digits_dir / "seven").glob("*.png"))[0]).convert("L"), dtype=np.float64)
    twelve_bit = tmp_path / "seven_12bit.png"
    Image.fromarray((digit / 255 * 4095).astype(np.uint16)).save(twelve_bit)  # a detector's 12 bits in 16-bit PNG
    assert np.asarray(open_rgb(twelve_bit)).max() >= 250  # full range kept, not crushed to 1/16th
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")

    with zipfile.ZipFile(export_bundle(finished_run, tmp_path / "bundle.zip")) as zf:
        zf.extractall(tmp_path / "bundle")
    done = subprocess.run(
        [sys.executable, "predict.py", str(broken), str(twelve_bit)],
        cwd=tmp_path / "bundle",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.strip().splitlines())
    assert "cannot read this image" in first["error"]  # one bad file does not stop the others

    expected = Predictor.from_run(finished_run).predict_paths([twelve_bit])[0]
    assert second["label"] == expected["label"]
    assert abs(second["confidence"] - expected["confidence"]) < 1e-4
