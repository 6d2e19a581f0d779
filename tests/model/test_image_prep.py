"""Image preparation sizes: understanding smart resize (factor 32) and the editing crop (49 sizes)."""

import numpy as np
import pytest
from PIL import Image

from workers.model.image_prep import (
    EditCrop,
    choose_crop_size,
    crop_size_list,
    edit_crop,
    smart_size,
    understanding_resize,
)


def _image(width, height, mode="RGB"):
    return Image.new(mode, (width, height), (40, 80, 120) + ((255,) if mode == "RGBA" else ()))


@pytest.mark.parametrize(
    "size, expected",
    [
        ((640, 480), (640, 480)),  # already multiples of 32 within bounds: unchanged
        ((900, 600), (896, 608)),  # rounded to the nearest multiples of 32
        ((4000, 3000), (896, 672)),  # above 800² pixels: scaled down
        ((100, 50), (192, 96)),  # below 128² pixels: scaled up
    ],
)
def test_understanding_resize_sizes(size, expected):
    out = understanding_resize(_image(*size))
    assert out.size == expected and out.mode == "RGB"
    w, h = out.size
    assert w % 32 == 0 and h % 32 == 0 and 128 * 128 <= w * h <= 800 * 800


def test_multi_image_bound():
    out = understanding_resize(_image(1024, 1024), max_pixels=448 * 448)
    assert out.size == (448, 448)


def test_smart_size_bounds_for_many_shapes():
    for width in range(40, 3000, 97):
        for height in range(40, 3000, 131):
            h, w = smart_size(height, width)
            assert h % 32 == 0 and w % 32 == 0 and 128 * 128 <= h * w <= 800 * 800, (width, height)


def test_understanding_resize_keeps_the_content_centred():
    pixels = np.zeros((300, 400, 3), dtype=np.uint8)
    pixels[:, 200:] = 255  # right half white
    out = np.asarray(understanding_resize(Image.fromarray(pixels)))
    assert out.shape == (288, 384, 3)
    assert out[:, :150].max() < 10 and out[:, -150:].min() > 245


def test_crop_size_list_is_the_reference_list():
    sizes = crop_size_list()
    assert len(sizes) == 49
    assert {(512, 512), (576, 448), (1024, 256), (256, 1024)} <= set(sizes)
    for w, h in sizes:
        assert w % 32 == 0 and h % 32 == 0 and (w // 32) * (h // 32) <= 256 and max(w, h) / min(w, h) <= 4


@pytest.mark.parametrize(
    "size, expected", [((1024, 1024), (512, 512)), ((640, 480), (576, 448)), ((480, 640), (448, 576)),
                       ((3000, 500), (1024, 256))]
)
def test_edit_crop_chooses_the_best_matching_aspect(size, expected):
    assert choose_crop_size(*size) == expected
    assert edit_crop(_image(*size)).size == expected
    assert edit_crop(_image(*size), policy=EditCrop.REFERENCE).size == expected


def test_edit_crop_cover_keeps_the_whole_image_but_reference_crops_the_centre():
    pixels = np.full((1024, 1024, 3), 255, dtype=np.uint8)
    pixels[:256] = 0  # a black band across the top quarter
    image = Image.fromarray(pixels)
    cover = np.asarray(edit_crop(image))
    reference = np.asarray(edit_crop(image, policy="reference"))
    assert cover[:100].max() < 10  # resized: the band is still there
    assert reference.min() > 245  # central 512² only: the band is gone (open question 13)


def test_reference_policy_pads_small_images_with_black():
    out = np.asarray(edit_crop(_image(256, 256), policy=EditCrop.REFERENCE))
    assert out.shape == (512, 512, 3) and out[0, 0].tolist() == [0, 0, 0] and out[256, 256].tolist() == [40, 80, 120]


def test_rgba_is_composited_on_white_and_bad_input_is_refused():
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert np.asarray(understanding_resize(rgba)).min() == 255
    with pytest.raises(ValueError, match="aspect"):
        understanding_resize(_image(5000, 10))
    with pytest.raises(TypeError):
        edit_crop(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        edit_crop(_image(64, 64), policy="stretch")
