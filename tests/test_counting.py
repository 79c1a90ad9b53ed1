"""Counting (Noroozi et al. 2017): the loss against numbers worked out by hand and numpy, the
XOR pairing, and the views (D(x) and the four tiles)."""
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.losses import counting_loss
from zoo.methods.counting import counting_views
from zoo.patches import pair_partner


def _numpy_counting_loss(down_x, tiles_x, down_y, margin):
    s = tiles_x.sum(axis=1)
    return np.mean(((down_x - s) ** 2).sum(-1) + np.maximum(0.0, margin - ((down_y - s) ** 2).sum(-1)))


def test_counting_loss_on_hand_made_inputs():
    # image 0: tiles sum to (1, 1); D x = (1, 2) -> first term 1; D y = (4, 1) -> |.|^2 = 9,
    #          margin 10 -> hinge active: 10 - 9 = 1; total 2.
    # image 1: tiles sum to (2, 0); D x = (2, 0) -> first term 0; D y = (2, 5) -> |.|^2 = 25 > 10:
    #          hinge inactive; total 0.
    down_x = np.array([[1.0, 2.0], [2.0, 0.0]], np.float32)
    tiles = np.array([[[1, 0], [0, 1], [0, 0], [0, 0]], [[1, 0], [0.5, 0], [0.5, 0], [0, 0]]], np.float32)
    down_y = np.array([[4.0, 1.0], [2.0, 5.0]], np.float32)
    loss = float(counting_loss(down_x, tiles, down_y, margin=10.0))
    assert loss == pytest.approx((2.0 + 0.0) / 2, abs=1e-6)
    assert loss == pytest.approx(_numpy_counting_loss(down_x, tiles, down_y, 10.0), abs=1e-6)
    # every hinge inactive: the loss is the tiling term alone
    assert float(counting_loss(down_x, tiles, down_y, margin=1.0)) == pytest.approx(0.5, abs=1e-6)
    # every hinge active with a large margin: 0.5 + mean(100 - 9, 100 - 25)
    assert float(counting_loss(down_x, tiles, down_y, margin=100.0)) == pytest.approx(0.5 + (91 + 75) / 2, abs=1e-5)


def test_counting_loss_matches_numpy_on_random_inputs(rng):
    down_x = rng.uniform(0, 2, (6, 5)).astype(np.float32)
    tiles = rng.uniform(0, 1, (6, 4, 5)).astype(np.float32)
    down_y = rng.uniform(0, 2, (6, 5)).astype(np.float32)
    for margin in (0.5, 3.0, 50.0):
        assert float(counting_loss(down_x, tiles, down_y, margin)) == pytest.approx(
            _numpy_counting_loss(down_x, tiles, down_y, margin), rel=1e-5)


def test_xor_pairing_stays_inside_even_shards():
    np.testing.assert_array_equal(pair_partner(8).numpy(), [1, 0, 3, 2, 5, 4, 7, 6])
    np.testing.assert_array_equal(pair_partner(5).numpy(), [1, 0, 3, 2, 3])  # odd: last with the one before


def test_views_are_the_downsampled_image_and_its_four_tiles(rng):
    images = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    views = counting_views(tf.constant(images), tf.constant([1, 2]), methods=("area",)).numpy()
    assert views.shape == (3, 5, 4, 4, 3)
    np.testing.assert_allclose(views[:, 0], images.reshape(3, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=1e-6)
    np.testing.assert_array_equal(views[:, 1], images[:, :4, :4])
    np.testing.assert_array_equal(views[:, 2], images[:, :4, 4:])
    np.testing.assert_array_equal(views[:, 3], images[:, 4:, :4])
    np.testing.assert_array_equal(views[:, 4], images[:, 4:, 4:])
    # every downsampling filter keeps a constant image constant
    flat = np.full((4, 8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(counting_views(tf.constant(flat), tf.constant([3, 4])).numpy(), 0.25, atol=1e-5)


def test_method_views_loss_and_panels():
    method = zoo.create("counting", backbone="resnet18", width=0.125, image_size=32, count_dim=16)
    images = zoo.data.load_arrays("shapes", "train").images[:4]
    views = method.make_views(tf.constant(images), tf.zeros([4], tf.int32), tf.constant([0, 1]))
    assert views["counting"].shape == (4, 5, 16, 16, 3)
    counts = method.phi(tf.reshape(views["counting"], [-1, 16, 16, 3])).numpy().reshape(4, 5, 16)
    assert np.all(counts >= 0)
    loss, metrics = method.pretext_loss(views)
    expected = _numpy_counting_loss(counts[:, 0], counts[:, 1:], counts[[1, 0, 3, 2], 0], method.config.margin)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["tile_error"]) == pytest.approx(
        np.mean(((counts[:, 0] - counts[:, 1:].sum(1)) ** 2).sum(-1)), rel=1e-4)
    panels = method.view_panels(views, 2)
    assert [c.split(",")[0] for c, _ in panels][:2] == ["D(x)", "tile 1 top-left"] and len(panels) == 5
    assert "image 3" in panels[0][0]
    np.testing.assert_array_equal(panels[3][1], views["counting"][2, 3].numpy())
