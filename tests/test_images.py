"""Every common format and mode decodes to upright RGB; unusable files get a reason, not a crash."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tl_core.images import MIN_SIDE, UnusableImage, load_square, open_rgb
from tl_core.limits import current


def _saved(img: Image.Image, fmt: str, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_each_format_decodes_to_rgb(fmt):
    img = Image.new("RGB", (40, 30), (10, 200, 30))
    out = open_rgb(_saved(img, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)
    r, g, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert g > 150 and r < 80 and b < 80  # still green: the colours survived


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    buffer.seek(0)
    r, _, b = np.asarray(open_rgb(buffer)).reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = np.asarray(open_rgb(_saved(Image.fromarray(ramp), "PNG")))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert 100 < out[32, 0, 0] < 155  # the middle of the ramp stays mid-grey (clipping would make it white)


def test_transparency_goes_on_white_and_modes_convert():
    transparent = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert np.asarray(open_rgb(_saved(transparent, "PNG"))).min() == 255
    palette = Image.new("RGB", (32, 32), (0, 0, 255)).convert("P")
    assert np.asarray(open_rgb(_saved(palette, "PNG")))[..., 2].mean() > 200
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    r, g, _ = np.asarray(open_rgb(_saved(cmyk, "JPEG"))).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60
    grey = Image.new("L", (32, 32), 128)
    assert np.asarray(open_rgb(_saved(grey, "PNG"))).shape == (32, 32, 3)


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    out = open_rgb(_saved(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 60)


def test_unusable_files_raise_with_reasons(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not really a picture")
    with pytest.raises(UnusableImage, match="not an image"):
        open_rgb(text)

    good = _saved(Image.new("RGB", (200, 200), (1, 2, 3)), "JPEG").getvalue()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(UnusableImage, match="corrupt or truncated"):
        open_rgb(truncated)

    with pytest.raises(UnusableImage, match="too small"):
        open_rgb(_saved(Image.new("RGB", (MIN_SIDE - 1, 100)), "PNG"))


def test_huge_image_is_refused_before_decoding():
    side = int(current().pixels ** 0.5) + 10
    bomb = _saved(Image.new("1", (side, side)), "PNG")  # a few KB on disk, 64+ megapixels decoded
    assert len(bomb.getvalue()) < 2_000_000
    with pytest.raises(UnusableImage, match="too large"):
        open_rgb(bomb)


def test_load_square_is_a_centre_crop_of_the_shorter_side(tmp_path):
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, 20:60] = 255  # a white centre band: the centre square of a 2:1 picture
    path = tmp_path / "wide.png"
    Image.fromarray(img).save(path)
    square = load_square(path, 20)
    assert square.shape == (20, 20, 3)
    assert square.mean() > 240


def test_twelve_bit_data_in_a_sixteen_bit_file_keeps_its_range():
    ramp = (np.linspace(0, 4095, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = np.asarray(open_rgb(_saved(Image.fromarray(ramp), "PNG")))
    assert out.max() == 255 and 100 < out[32, 0, 0] < 155
