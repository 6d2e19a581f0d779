"""The service's image-shape rule (shared/images.py): one rule, the same bound as the model library's."""

import pytest

from shared.images import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, check_image_shape
from shared.jobs import InvalidArgument


def test_the_model_library_refuses_the_same_aspect_ratios():
    # workers/model may not import shared (it is a library of its own): this test keeps the two equal.
    from workers.model import image_prep
    assert image_prep.MAX_ASPECT_RATIO == MAX_ASPECT_RATIO


@pytest.mark.parametrize("size", [(4032, 3024), (1, 1), (200, 1), (1, 200), (4096, 4096), (16384, 82)],
                         ids=str)
def test_images_the_model_can_use_pass(size):
    check_image_shape(*size, field="image")


@pytest.mark.parametrize("size, words", [
    ((1, 4096), "aspect ratio of 4096:1"),
    ((8192, 8192), f"the limit is {MAX_IMAGE_PIXELS}"),
    ((4097, 4096), f"the limit is {MAX_IMAGE_PIXELS}"),
    ((16385, 100), f"the longest side may be {MAX_IMAGE_SIDE}"),
    ((0, 10), "is empty"),
], ids=str)
def test_images_beyond_the_rule_are_refused_naming_the_field(size, words):
    with pytest.raises(InvalidArgument) as err:
        check_image_shape(*size, field="edit.image")
    assert err.value.field == "edit.image" and words in err.value.message

