"""zoo.augment against independent numpy references: np.rot90, np.flip, exhaustive search over
reflect-padded crops, the 0.299/0.587/0.114 luma, a separable numpy Gaussian blur with reflect
padding, and hand-derived invariants (identities at zero strength, grey stays grey)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from zoo import augment
from zoo.methods.rotation import rotation_batch
from numerics import bilinear_sample

SEED = tf.constant([1, 2], tf.int32)


def _images(rng, b=3, h=8, w=8):
    return rng.uniform(size=(b, h, w, 3)).astype(np.float32)


def _seeds(*pairs):
    return [tf.constant(p, tf.int32) for p in pairs]


# ---- rotation ----

@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate_matches_np_rot90(rng, k):
    images = rng.uniform(size=(2, 5, 5, 3)).astype(np.float32)
    got = augment.rotate(tf.constant(images), k).numpy()
    expected = np.stack([np.rot90(img, k, axes=(0, 1)) for img in images])
    np.testing.assert_array_equal(got, expected)


def test_rotate_non_square_swaps_height_and_width(rng):
    images = rng.uniform(size=(2, 4, 6, 3)).astype(np.float32)
    got = augment.rotate(tf.constant(images), 1).numpy()
    assert got.shape == (2, 6, 4, 3)
    np.testing.assert_array_equal(got, np.stack([np.rot90(img, 1, axes=(0, 1)) for img in images]))


def test_rotation_batch_layout(rng):
    images = _images(rng, b=3, h=6, w=6)
    out = rotation_batch(tf.constant(images))
    got, labels = out["images"].numpy(), out["rotation"].numpy()
    assert got.shape == (12, 6, 6, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3] * 3)
    for i in range(3):
        for k in range(4):
            np.testing.assert_array_equal(got[4 * i + k], np.rot90(images[i], k, axes=(0, 1)))


def _numpy_affine(image, angle, scale, t):
    """Bilinear inverse mapping in numpy: out(p) = in(R(angle) (p - c - t) / scale + c),
    zero outside the image."""
    h, w, _ = image.shape
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            sx, sy = rot @ (np.array([x, y]) - c - t) / scale + c
            out[y, x] = bilinear_sample(image, sy, sx)
    return out


def test_affine_transform_matches_rot90_and_a_numpy_bilinear_warp(rng):
    images = _images(rng, b=3, h=7, w=7)
    got = augment.affine_transform(tf.constant(images), [math.pi / 2] * 3).numpy()
    np.testing.assert_allclose(got, np.rot90(images, 1, axes=(1, 2)), atol=1e-5)
    angles, scales, shifts = [0.3, -1.1, 2.0], [1.0, 1.4, 0.8], [[0.0, 0.0], [1.5, -0.5], [-2.0, 1.0]]
    got = augment.affine_transform(tf.constant(images), angles, scales, shifts, fill_mode="constant").numpy()
    for i in range(3):
        expected = _numpy_affine(images[i], angles[i], scales[i], np.array(shifts[i]))
        np.testing.assert_allclose(got[i], expected, atol=1e-5)


@pytest.mark.parametrize("num, expected", [(2, (0, 180)), (4, (0, 90, 180, 270)), (8, tuple(range(0, 360, 45)))])
def test_rotation_sets(num, expected):
    from zoo.methods.rotation import RotationConfig, rotation_angles
    assert rotation_angles(RotationConfig(num_rotations=num)) == expected
    assert rotation_angles(RotationConfig(rotations=(90, 270))) == (90, 270)
    for bad in (dict(num_rotations=3), dict(rotations=(0, 30)), dict(rotations=(0, 0)), dict(corners="black")):
        with pytest.raises(ValueError, match="rotations|corners"):
            rotation_angles(RotationConfig(**bad))


def test_eight_rotations_hide_the_corners_and_zoom_every_copy_alike(rng):
    ones = np.ones((2, 16, 16, 3), np.float32)
    angles = tuple(range(0, 360, 45))
    cropped = rotation_batch(tf.constant(ones), angles, "crop")["images"].numpy()
    np.testing.assert_allclose(cropped, 1.0, atol=1e-5)  # no fill anywhere, at any angle
    filled = rotation_batch(tf.constant(ones), angles, "zeros")["images"].numpy()
    assert filled[1, 0, 0, 0] == 0.0 and filled[0, 0, 0, 0] == 1.0  # 45 degrees: empty corner
    images = _images(rng, b=2, h=16, w=16)
    out = rotation_batch(tf.constant(images), angles, "crop")
    got, labels = out["images"].numpy(), out["rotation"].numpy()
    np.testing.assert_array_equal(labels, list(range(8)) * 2)
    for i in range(2):  # the 90-degree copy is the 0-degree copy turned by np.rot90: same zoom
        np.testing.assert_allclose(got[8 * i + 2], np.rot90(got[8 * i], 1, axes=(0, 1)), atol=1e-5)
        np.testing.assert_allclose(got[8 * i + 4], np.rot90(got[8 * i], 2, axes=(0, 1)), atol=1e-5)
        assert np.abs(got[8 * i] - images[i]).max() > 0.01  # zoomed, not the original


# ---- CIFAR crop ----

def _matching_offsets(padded, out, h, w):
    """All integer offsets (dy, dx) at which `out` is a crop of `padded` (numpy search)."""
    hp, wp = padded.shape[:2]
    return [(dy, dx) for dy in range(hp - h + 1) for dx in range(wp - w + 1)
            if np.allclose(padded[dy:dy + h, dx:dx + w], out, atol=1e-5)]


@pytest.mark.parametrize("padding", [1, 2])
def test_random_crop_with_padding_is_a_crop_of_the_reflect_padded_image(rng, padding):
    images = _images(rng, b=6, h=7, w=5)
    out = augment.random_crop_with_padding(tf.constant(images), SEED, padding).numpy()
    assert out.shape == images.shape
    offsets = []
    for img, o in zip(images, out):
        padded = np.pad(img, [(padding, padding), (padding, padding), (0, 0)], mode="reflect")
        found = _matching_offsets(padded, o, 7, 5)
        assert found, "output is not an integer-offset crop of the reflect-padded image"
        assert all(0 <= dy <= 2 * padding and 0 <= dx <= 2 * padding for dy, dx in found)
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # the offsets are random, not all the same


def test_random_crop_with_padding_seeds(rng):
    images = tf.constant(_images(rng, b=8))
    s1, s2 = _seeds([3, 4], [5, 6])
    a = augment.random_crop_with_padding(images, s1, 2).numpy()
    np.testing.assert_array_equal(a, augment.random_crop_with_padding(images, s1, 2).numpy())
    assert not np.allclose(a, augment.random_crop_with_padding(images, s2, 2).numpy())


# ---- random resized crop ----

def test_random_resized_crop_full_box_is_identity(rng):
    images = _images(rng, b=3, h=9, w=9)
    out = augment.random_resized_crop(tf.constant(images), 9, SEED, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(out.numpy(), images, atol=1e-5)


def test_random_resized_crop_constant_image_and_size(rng):
    images = np.full((4, 10, 12, 3), 0.3, np.float32)
    images[1] = 0.7
    out = augment.random_resized_crop(tf.constant(images), 6, SEED).numpy()
    assert out.shape == (4, 6, 6, 3)
    np.testing.assert_allclose(out[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.7, atol=1e-6)


def test_random_resized_crop_is_seeded_and_crops_inside(rng):
    # A horizontal ramp x / (W - 1): any crop's values stay in [0, 1], and a small crop spans
    # a sub-range, so outputs differ between seeds.
    w = 16
    ramp = np.tile(np.linspace(0, 1, w, dtype=np.float32)[None, :, None], (16, 1, 3))
    images = tf.constant(np.stack([ramp] * 4))
    s1, s2 = _seeds([7, 8], [9, 10])
    a = augment.random_resized_crop(images, 8, s1, scale=(0.1, 0.3)).numpy()
    np.testing.assert_array_equal(a, augment.random_resized_crop(images, 8, s1, scale=(0.1, 0.3)).numpy())
    assert not np.allclose(a, augment.random_resized_crop(images, 8, s2, scale=(0.1, 0.3)).numpy())
    assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6
    spans = a[..., 0].max(axis=(1, 2)) - a[..., 0].min(axis=(1, 2))
    assert np.all(spans < 0.8)  # a crop of at most 30% of the area, with ratio <= 4/3, is narrower


# ---- flip ----

def test_random_flip_p1_and_p0(rng):
    images = _images(rng, b=4, h=5, w=6)
    flipped = augment.random_flip(tf.constant(images), SEED, p=1.0).numpy()
    np.testing.assert_array_equal(flipped, np.flip(images, axis=2))
    np.testing.assert_array_equal(augment.random_flip(tf.constant(images), SEED, p=0.0).numpy(), images)


def test_random_flip_half_flips_each_image_either_way(rng):
    images = _images(rng, b=16, h=4, w=4)
    out = augment.random_flip(tf.constant(images), SEED, p=0.5).numpy()
    flipped = [np.array_equal(o, np.flip(i, axis=1)) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 16


# ---- colour ----

def test_grayscale_matches_numpy(rng):
    images = _images(rng)
    luma = 0.299 * images[..., 0] + 0.587 * images[..., 1] + 0.114 * images[..., 2]
    got = augment.grayscale(tf.constant(images)).numpy()
    assert got.shape == images.shape
    for c in range(3):
        np.testing.assert_allclose(got[..., c], luma, atol=1e-6)


def test_color_jitter_zero_strength_is_identity(rng):
    images = _images(rng)
    out = augment.color_jitter(tf.constant(images), SEED, 0.0, 0.0, 0.0, 0.0).numpy()
    np.testing.assert_allclose(out, images, atol=1e-5)


def test_color_jitter_keeps_range_and_changes_images(rng):
    images = _images(rng, b=4)
    out = augment.color_jitter(tf.constant(images), SEED, 0.4, 0.4, 0.4, 0.1).numpy()
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - images).max() > 0.05


def test_color_jitter_brightness_only_matches_a_per_image_factor(rng):
    images = _images(rng, b=4) * 0.5  # <= 0.5, so factors in [0.6, 1.4] never clip
    out = augment.color_jitter(tf.constant(images), SEED, 0.4, 0.0, 0.0, 0.0).numpy()
    for img, o in zip(images, out):
        factor = o.sum() / img.sum()
        assert 0.6 - 1e-5 <= factor <= 1.4 + 1e-5
        np.testing.assert_allclose(o, np.clip(img * factor, 0, 1), atol=1e-5)


def test_rotate_hue_by_zero_and_full_turn_is_identity(rng):
    images = _images(rng, b=2)
    for radians in (0.0, 2 * math.pi, -2 * math.pi):
        out = augment._rotate_hue(tf.constant(images), tf.fill([2], radians)).numpy()
        np.testing.assert_allclose(out, images, atol=1e-5)


def test_rotate_hue_preserves_luma_and_grey(rng):
    images = _images(rng, b=3)
    radians = tf.constant([0.5, 2.0, -1.3])
    out = augment._rotate_hue(tf.constant(images), radians).numpy()
    luma = lambda x: x @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    np.testing.assert_allclose(luma(out), luma(images), atol=1e-5)  # Y is the rotation axis
    assert np.abs(out - images).max() > 0.05  # and it does change the colours
    # A half turn in the IQ plane negates the chroma: rgb - luma flips sign.
    half = augment._rotate_hue(tf.constant(images), tf.fill([3], math.pi)).numpy()
    np.testing.assert_allclose(half - luma(images)[..., None], -(images - luma(images)[..., None]), atol=1e-5)
    grey = np.repeat(rng.uniform(size=(3, 4, 4, 1)).astype(np.float32), 3, axis=-1)
    out_grey = augment._rotate_hue(tf.constant(grey), radians).numpy()
    np.testing.assert_allclose(out_grey, grey, atol=1e-5)


def test_color_jitter_keeps_grey_images_grey(rng):
    grey = np.repeat(rng.uniform(0.1, 0.9, size=(4, 6, 6, 1)).astype(np.float32), 3, axis=-1)
    out = augment.color_jitter(tf.constant(grey), SEED, 0.4, 0.4, 0.8, 0.5).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)
    assert np.abs(out - grey).max() > 1e-3  # brightness / contrast still act


# ---- blur ----

def _numpy_gaussian_blur(img, sigma, radius):
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)], mode="reflect")
    h, w = img.shape[:2]
    rows = sum(k[i] * p[i:i + h, :, :] for i in range(2 * radius + 1))  # vertical pass
    return sum(k[j] * rows[:, j:j + w, :] for j in range(2 * radius + 1))  # horizontal pass


@pytest.mark.parametrize("size, sigma", [(20, 1.0), (30, 0.7)])
def test_gaussian_blur_matches_numpy(rng, size, sigma):
    images = _images(rng, b=3, h=size, w=size)
    radius = max(1, int(size * 0.1) // 2)  # SimCLR: kernel 10% of the side
    out = augment.gaussian_blur(tf.constant(images), SEED, sigma=(sigma, sigma), p=1.0).numpy()
    for img, o in zip(images, out):
        np.testing.assert_allclose(o, _numpy_gaussian_blur(img, sigma, radius), atol=1e-5)
    # A wider kernel: kernel_fraction 0.3 -> radius 3 at 20 px.
    out = augment.gaussian_blur(tf.constant(images[:, :20, :20]), SEED, sigma=(2.0, 2.0), p=1.0,
                                kernel_fraction=0.3).numpy()
    np.testing.assert_allclose(out[1], _numpy_gaussian_blur(images[1, :20, :20], 2.0, 3), atol=1e-5)


def _fit_sigma(img, out, radius, low, high):
    """The sigma in [low, high] whose numpy blur of img is closest to out (ternary search)."""
    err = lambda s: np.abs(_numpy_gaussian_blur(img, s, radius) - out).max()  # noqa: E731
    for _ in range(60):
        m1, m2 = low + (high - low) / 3, high - (high - low) / 3
        low, high = (low, m2) if err(m1) < err(m2) else (m1, high)
    return low, err(low)


def test_gaussian_blur_random_sigma_is_one_gaussian_per_image(rng):
    # Each image gets its own sigma in the range, shared by its three channels: every output is
    # the numpy blur of its input for some sigma in [0.5, 2.0], and the sigmas differ.
    images = _images(rng, b=4, h=20, w=20)
    out = augment.gaussian_blur(tf.constant(images), SEED, sigma=(0.5, 2.0), p=1.0).numpy()
    sigmas = []
    for img, o in zip(images, out):
        sigma, err = _fit_sigma(img, o, 1, 0.5, 2.0)
        assert err < 1e-5
        sigmas.append(sigma)
    assert len({round(s, 3) for s in sigmas}) == 4


def test_gaussian_blur_per_image_sigma_and_probability(rng):
    images = _images(rng, b=6, h=20, w=20)
    out = augment.gaussian_blur(tf.constant(images), SEED, p=0.0).numpy()
    np.testing.assert_array_equal(out, images)
    out = augment.gaussian_blur(tf.constant(images), SEED, sigma=(0.5, 2.0), p=1.0).numpy()
    for img, o in zip(images, out):
        assert o.std() < img.std()  # smoother
        np.testing.assert_allclose(o.mean(), img.mean(), atol=0.02)
    const = np.full((2, 20, 20, 3), 0.42, np.float32)
    np.testing.assert_allclose(augment.gaussian_blur(tf.constant(const), SEED, p=1.0).numpy(), 0.42, atol=1e-6)


# ---- SimCLR view ----

def test_simclr_view_shape_range_determinism(rng):
    images = tf.constant(_images(rng, b=4, h=12, w=12))
    s1, s2 = _seeds([11, 12], [13, 14])
    a = augment.simclr_view(images, 8, s1).numpy()
    assert a.shape == (4, 8, 8, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, augment.simclr_view(images, 8, s1).numpy())
    assert not np.allclose(a, augment.simclr_view(images, 8, s2).numpy())
    blurred = augment.simclr_view(images, 8, s1, blur=True).numpy()
    assert blurred.shape == (4, 8, 8, 3) and blurred.min() >= 0.0 and blurred.max() <= 1.0


def test_split_seed_gives_distinct_deterministic_seeds():
    seeds = [s.numpy() for s in augment.split_seed(SEED, 5)]
    assert len(seeds) == 5 and all(s.shape == (2,) for s in seeds)
    assert len({tuple(s) for s in seeds}) == 5
    assert tuple(SEED.numpy()) not in {tuple(s) for s in seeds}
    again = [s.numpy() for s in augment.split_seed(SEED, 5)]
    np.testing.assert_array_equal(np.stack(seeds), np.stack(again))
    other = [s.numpy() for s in augment.split_seed(tf.constant([1, 3]), 5)]
    assert not np.array_equal(np.stack(seeds), np.stack(other))


def test_to_float():
    got = augment.to_float(tf.constant([[0, 51, 255]], tf.uint8)).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.2, 1.0]], atol=1e-7)
    assert got.dtype == np.float32


def test_sampled_rotations_are_distinct_per_image_and_match_their_labels(rng):
    from zoo.methods.rotation import sampled_rotation_batch
    images = _images(rng, b=5, h=16, w=16)
    angles = tuple(range(0, 360, 45))
    out = sampled_rotation_batch(tf.constant(images), angles, 4, SEED, "crop")
    got, labels = out["images"].numpy(), out["rotation"].numpy().reshape(5, 4)
    full = rotation_batch(tf.constant(images), angles, "crop")["images"].numpy().reshape(5, 8, 16, 16, 3)
    assert len({tuple(r) for r in labels}) > 1  # not the same subset for every image
    for i in range(5):
        assert len(set(labels[i])) == 4
        for j, label in enumerate(labels[i]):  # each copy is the full batch's copy of that angle
            np.testing.assert_allclose(got[4 * i + j], full[i, label], atol=1e-4)
