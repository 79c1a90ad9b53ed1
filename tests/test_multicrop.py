"""Multi-crop views (zoo.augment.multi_crop, random_crop_boxes) and the grouped encoder forward
(zoo.heads.multi_crop_forward) against hand checks: shapes and value range, seeding, crop boxes
inside the image with areas in the scale ranges, crop k made from seed k with its size's
scale (against random_resized_crop), and the grouped forward equal to one call per crop in
inference mode, with one encoder call per crop size."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import augment
from zoo.heads import mlp_head, multi_crop_forward

SEED = tf.constant([3, 4])


def _images(n=4):
    return augment.to_float(tf.constant(zoo.data.load_arrays("shapes", "train").images[:n]))


def test_multi_crop_shapes_range_and_seeding():
    x = _images()
    large, small = augment.multi_crop(x, SEED, 32, 16, num_large=2, num_small=6)
    assert large.shape == (4, 2, 32, 32, 3) and small.shape == (4, 6, 16, 16, 3)
    for crops in (large, small):
        assert 0.0 <= float(tf.reduce_min(crops)) and float(tf.reduce_max(crops)) <= 1.0
    again = augment.multi_crop(x, SEED, 32, 16, num_large=2, num_small=6)
    np.testing.assert_array_equal(large.numpy(), again[0].numpy())
    np.testing.assert_array_equal(small.numpy(), again[1].numpy())
    other = augment.multi_crop(x, tf.constant([5, 6]), 32, 16, num_large=2, num_small=6)
    assert not np.allclose(large.numpy(), other[0].numpy()) and not np.allclose(small.numpy(), other[1].numpy())
    # every crop of an image differs from every other crop of the same size
    for crops in (large.numpy(), small.numpy()):
        k = crops.shape[1]
        for a in range(k):
            for b in range(a + 1, k):
                assert np.abs(crops[:, a] - crops[:, b]).max() > 0.05, (a, b)
    none_small = augment.multi_crop(x, SEED, 32, 16, num_large=2, num_small=0)[1]
    assert none_small.shape == (4, 0, 16, 16, 3)


@pytest.mark.parametrize("scale", [(0.14, 1.0), (0.05, 0.14), (0.5, 0.5)])
def test_crop_boxes_are_inside_the_image_with_area_in_the_scale_range(scale):
    ratio = (3 / 4, 4 / 3)
    boxes = augment.random_crop_boxes(2000, SEED, scale, ratio).numpy().astype(np.float64)
    y0, x0, y1, x1 = boxes.T
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    h, w = y1 - y0, x1 - x0
    area = h * w
    # Clipping (only for areas above 3/4 here) can only shrink a box, never below the range.
    assert area.max() <= scale[1] + 1e-5 and area.min() >= scale[0] - 1e-5
    unclipped = (h < 1 - 1e-6) & (w < 1 - 1e-6)
    assert np.all(w[unclipped] / h[unclipped] >= ratio[0] - 1e-4)
    assert np.all(w[unclipped] / h[unclipped] <= ratio[1] + 1e-4)
    if scale[0] < scale[1]:  # uniform in area: both halves of the range are used
        mid = sum(scale) / 2
        assert 0.35 < np.mean(area[unclipped] < mid) < 0.65
        assert np.std(np.log(w / h)[unclipped]) > 0.5 * (math.log(ratio[1]) - math.log(ratio[0])) / math.sqrt(12)
    np.testing.assert_array_equal(boxes, augment.random_crop_boxes(2000, SEED, scale, ratio).numpy())


def test_crop_k_is_a_resized_crop_with_seed_k_and_its_sizes_scale():
    x = _images()
    crop = lambda images, size, seed, crop_scale: augment.random_resized_crop(images, size, seed, scale=crop_scale)  # noqa: E731
    large, small = augment.multi_crop(x, SEED, 24, 12, num_large=2, num_small=3, large_scale=(0.5, 1.0),
                                      small_scale=(0.1, 0.2), view=crop)
    seeds = augment.split_seed(SEED, 5)
    for k in range(2):
        np.testing.assert_allclose(large[:, k].numpy(), augment.random_resized_crop(x, 24, seeds[k], (0.5, 1.0)).numpy())
    for k in range(3):
        np.testing.assert_allclose(small[:, k].numpy(),
                                   augment.random_resized_crop(x, 12, seeds[2 + k], (0.1, 0.2)).numpy())


def test_per_crop_view_arguments():
    x = _images()
    # a list gives each crop its own arguments: crop 1 greyscale, crop 0 untouched colours
    large, _ = augment.multi_crop(x, SEED, 32, 16, num_large=2, num_small=1,
                                  large_kwargs=[dict(jitter_p=0.0, grayscale_p=0.0), dict(grayscale_p=1.0)])
    grey = large[:, 1].numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-5)
    assert np.abs(large[:, 0].numpy()[..., 0] - large[:, 0].numpy()[..., 1]).max() > 0.05
    with pytest.raises(ValueError, match="3 argument dicts for 2 crops"):
        augment.multi_crop(x, SEED, 32, 16, num_large=2, large_kwargs=[{}, {}, {}])


class _Counting(keras.Model):
    """Wraps an encoder and counts its calls (at trace time: eager here)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls = encoder, []

    def call(self, x, training=False):
        self.calls.append(tuple(x.shape))
        return self.encoder(x, training=training)


def test_grouped_forward_equals_one_call_per_crop():
    keras.utils.set_random_seed(0)
    encoder = zoo.backbones.build_backbone("resnet18", width=0.125, image_size=32)
    dim = encoder.output_shape[-1]
    head = mlp_head(dim, 32, 8, name="head")
    large, small = augment.multi_crop(_images(3), SEED, 32, 16, num_large=2, num_small=3)
    counting = _Counting(encoder)
    out = multi_crop_forward(counting, [large, small], head, training=False).numpy()
    assert out.shape == (5, 3, 8)
    assert counting.calls == [(6, 32, 32, 3), (9, 16, 16, 3)]  # one call per crop size
    crops = [large[:, k] for k in range(2)] + [small[:, k] for k in range(3)]
    for v, crop in enumerate(crops):
        expected = head(encoder(crop, training=False), training=False).numpy()
        np.testing.assert_allclose(out[v], expected, rtol=1e-4, atol=1e-5)
    # without a head: the encoder features, same order
    features = multi_crop_forward(encoder, [large, small], training=False).numpy()
    np.testing.assert_allclose(features[3], encoder(small[:, 1], training=False).numpy(), rtol=1e-4, atol=1e-5)
