"""Exemplar CNN (seed patch placement, the patch warp, the seed subset, the views) and NPID's
non-parametric logits against numpy with a known bank."""
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.losses import npid_logits
from zoo.methods.exemplar import gradient_crop_location, patch_warp


def _textured_square(rng, size=32, top=18, left=4, side=9):
    image = np.full((size, size, 3), 0.5, np.float32)
    image[top:top + side, left:left + side] = rng.uniform(0, 1, (side, side, 1))
    return image


@pytest.mark.parametrize("top,left", [(18, 4), (2, 20), (11, 11)])
def test_seed_patch_lands_on_the_only_textured_square(rng, top, left):
    side, patch = 9, 12
    image = _textured_square(rng, top=top, left=left, side=side)
    y, x = gradient_crop_location(tf.constant(image[None]), patch).numpy()[0]
    assert 0 <= y <= 32 - patch and 0 <= x <= 32 - patch
    # the whole square lies inside the chosen window
    assert y <= top and top + side <= y + patch and x <= left and left + side <= x + patch
    # with a window the size of the square, the window is (almost) the square
    y, x = gradient_crop_location(tf.constant(image[None]), side).numpy()[0]
    assert abs(y - top) <= 1 and abs(x - left) <= 1


def test_patch_warp_moves_the_centre_point_as_specified():
    image = np.zeros((1, 33, 33, 3), np.float32)
    image[0, 5, 9] = 1.0  # a marker at (y, x) = (5, 9); the output centre is (16, 16)
    centre = tf.constant([[5.0, 9.0]])
    one, zero, no_shift = tf.ones([1]), tf.zeros([1]), tf.zeros([1, 2])

    def warp(zoom, angle, shift=no_shift):
        return patch_warp(tf.constant(image), centre, zoom, tf.constant([angle], tf.float32), shift).numpy()[0, ..., 0]

    # (reflected borders may hold mirror copies of the marker elsewhere, so check values)
    assert warp(one, 0.0)[16, 16] == pytest.approx(1.0, abs=1e-5)
    assert warp(one, np.pi / 2)[16, 16] == pytest.approx(1.0, abs=1e-4)
    assert warp(2 * one, 0.7)[16, 16] == pytest.approx(1.0, abs=1e-4)
    # shift = (dx, dy) in output pixels
    out = warp(one, 0.0, tf.constant([[3.0, -2.0]]))
    assert out[14, 19] == pytest.approx(1.0, abs=1e-5) and out[16, 16] == pytest.approx(0.0, abs=1e-5)
    # a second marker 4 px right of the first ends 8 px right of the centre at zoom 2, and 8 px
    # up (counter-clockwise, as np.rot90) after a further 90-degree rotation
    image[0, 5, 13] = 0.6
    assert warp(2 * one, 0.0)[16, 24] == pytest.approx(0.6, abs=1e-5)
    assert warp(2 * one, np.pi / 2)[8, 16] == pytest.approx(0.6, abs=1e-4)


def test_training_subset_is_deterministic_and_of_the_right_size():
    method = zoo.create("exemplar", backbone="resnet18", width=0.125, num_classes=50)
    images = np.zeros((300, 32, 32, 3), np.uint8)
    a, b = method.training_subset(images), method.training_subset(images)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 50 and len(np.unique(a)) == 50 and np.all(np.diff(a) > 0) and a.max() < 300
    other = zoo.create("exemplar", backbone="resnet18", width=0.125, num_classes=50, subset_seed=1)
    assert not np.array_equal(other.training_subset(images), a)
    assert method.training_subset(images[:50]) is None  # no more images than classes: all of them


def test_views_are_copies_of_the_seed_patch_labelled_with_its_class():
    method = zoo.create("exemplar", backbone="resnet18", width=0.125, num_classes=100, copies_per_seed=3)
    images = zoo.data.load_arrays("shapes", "train").images[:4]
    ids = tf.constant([7, 0, 99, 105], tf.int32)
    views = method.make_views(tf.constant(images), ids, tf.constant([1, 2]))
    assert views["patches"].shape == (4, 3, 32, 32, 3)
    np.testing.assert_array_equal(views["surrogate_class"].numpy(), [7, 0, 99, 5])  # ids modulo num_classes
    p = views["patches"].numpy()
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert not np.allclose(p[0, 0], p[0, 1])  # independent transformations
    panels = method.view_panels(views, 2)
    assert [c for c, _ in panels] == ["class 99 copy 0", "class 99 copy 1", "class 99 copy 2"]
    loss, metrics = method.pretext_loss(views, training=True)
    assert np.isfinite(float(loss)) and set(metrics) == {"surrogate_accuracy"}


def test_npid_logits_against_numpy_with_a_known_bank(rng):
    bank = rng.normal(size=(6, 3)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    v = rng.normal(size=(2, 3)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = np.array([4, 1], np.int32)
    logits, labels = npid_logits(tf.constant(v), tf.constant(ids), tf.constant(bank), 0.07)
    np.testing.assert_allclose(logits.numpy(), v @ bank.T / 0.07, rtol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), ids)
    # full softmax cross-entropy = -log softmax at the image's own row
    ref = np.exp(v @ bank.T / 0.07)
    ref = -np.log(ref[np.arange(2), ids] / ref.sum(1))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()
    np.testing.assert_allclose(ce, ref, rtol=1e-4)
    # sampled: own row first, then the drawn rows; a drawn row equal to the own id is masked
    negatives = np.array([[0, 4, 5], [1, 2, 3]], np.int32)
    logits, labels = npid_logits(tf.constant(v), tf.constant(ids), tf.constant(bank), 0.5, tf.constant(negatives))
    expected = np.stack([v[i] @ bank[np.r_[ids[i], negatives[i]]].T / 0.5 for i in range(2)])
    got = logits.numpy()
    np.testing.assert_array_equal(labels.numpy(), [0, 0])
    np.testing.assert_allclose(got[0, [0, 1, 3]], expected[0, [0, 1, 3]], rtol=1e-5)
    np.testing.assert_allclose(got[1, [0, 2, 3]], expected[1, [0, 2, 3]], rtol=1e-5)
    assert got[0, 2] < -1e8 and got[1, 1] < -1e8


def test_npid_loss_uses_the_bank_rows_of_the_example_ids():
    method = zoo.create("npid", backbone="resnet18", width=0.125, num_examples=10)
    images = zoo.data.load_arrays("shapes", "train").images[:4]
    views = method.make_views(tf.constant(images), tf.constant([2, 9, 13, 0], tf.int32), tf.constant([0, 0]))
    v = method.embed(views["images"]).numpy()
    bank = method.memory_bank.features.numpy()
    logits = v @ bank.T / 0.07
    ids = np.array([2, 9, 3, 0])  # 13 wraps to row 3
    logits -= logits.max(1, keepdims=True)
    ref = np.mean(-(logits[np.arange(4), ids] - np.log(np.exp(logits).sum(1))))
    assert float(method.pretext_loss(views)[0]) == pytest.approx(ref, rel=1e-4)
