"""zoo.patches and the two patch methods (relative_patch, jigsaw) against independent
references: images whose pixel values encode their coordinates (or their cell and image
index) so every patch says where it came from, numpy slicing and fancy indexing, the paper's
Algorithm 1 run literally (np.delete over all 9! permutations), and brute-force Hamming
distances."""
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf

import zoo
from numerics import bilinear_sample
from zoo import patches

SEED = tf.constant([1, 2], tf.int32)
TINY = dict(backbone="resnet18", width=0.125)
# Label -> (row, col) offset of the neighbour from the centre, written out by hand.
HAND_OFFSETS = {0: (-1, -1), 1: (-1, 0), 2: (-1, 1), 3: (0, -1), 4: (0, 1), 5: (1, -1), 6: (1, 0), 7: (1, 1)}


def _coordinate_images(b, size):
    """uint8 [b, size, size, 3]: red = 8 * row, green = 8 * column, blue = 40 * image index."""
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.zeros((b, size, size, 3), np.uint8)
    images[..., 0], images[..., 1] = 8 * y, 8 * x
    images[..., 2] = 40 * np.arange(b)[:, None, None]
    return images


def _decode_corner(patch):
    """(row, col) of a coordinate-encoded float patch's top-left pixel."""
    return int(round(patch[0, 0, 0] * 255 / 8)), int(round(patch[0, 0, 1] * 255 / 8))


# ---- relative patch geometry ----------------------------------------------------------------

def test_pair_geometry_rounds_fractions_and_rejects_impossible_layouts():
    assert patches.pair_geometry(32, 0.22, 0.1, 0.03) == patches.PairGeometry(32, 7, 3, 1)
    g = patches.pair_geometry(224, 0.22, 0.1, 0.03)
    assert (g.patch, g.gap, g.jitter, g.min_gap, g.origin_range) == (49, 22, 7, 8, (7, 224 - 191 - 7))
    with pytest.raises(ValueError, match="overlap"):
        patches.pair_geometry(32, 0.2, 0.03, 0.03)  # gap 1 px < 2 x jitter 1 px
    with pytest.raises(ValueError, match="do not fit"):
        patches.pair_geometry(32, 0.3, 0.1, 0.03)  # 3 x 10 + 2 x 3 + 2 > 32


@pytest.mark.parametrize("size,fractions", [(32, (0.22, 0.1, 0.03)), (64, (0.2, 0.12, 0.05))])
def test_pair_boxes_are_inside_disjoint_gapped_and_where_the_label_says(size, fractions):
    g = patches.pair_geometry(size, *fractions)
    corners, labels = patches.sample_pair_corners(4000, g, SEED)
    corners, labels = corners.numpy(), labels.numpy()
    p = g.patch
    assert corners.min() >= 0 and corners.max() + p <= size  # both boxes inside the image
    centre, neighbour = corners[:, 0], corners[:, 1]
    d = neighbour - centre
    # Separation of two p x p boxes: the larger of the empty widths between them along y and x.
    separation = np.max(np.abs(d) - p, axis=1)
    assert separation.min() >= g.min_gap >= 0  # never overlap, gap minus 2 x jitter respected
    assert separation.min() == g.min_gap  # ... and the bound is attained (jitter really moves patches)
    expected = np.array([HAND_OFFSETS[int(k)] for k in labels])
    # The neighbour sits one pitch away in the labelled direction, give or take 2 x jitter.
    assert np.all(np.abs(d - g.pitch * expected) <= 2 * g.jitter)
    assert set(labels) == set(range(8))
    lo, hi = g.origin_range
    origin = centre - g.pitch  # un-jittered origin plus the centre's jitter
    assert origin.min() == lo - g.jitter and origin.max() == hi + g.jitter


def test_cut_size_resizes_the_image_before_cutting():
    rel = zoo.create("relative_patch", **TINY, image_size=32, cut_size=64, chromatic="none")
    assert rel.geometry == patches.PairGeometry(64, 14, 6, 2)
    images = tf.constant(np.full((4, 32, 32, 3), 200, np.uint8))
    views = rel.make_views(images, tf.zeros([4], tf.int32), SEED)
    assert views["patches"].shape == (4, 2, 14, 14, 3)
    np.testing.assert_allclose(views["patches"].numpy(), 200 / 255, atol=1e-6)
    jig = zoo.create("jigsaw", **TINY, image_size=32, cut_size=64)
    assert jig.geometry == patches.GridGeometry(64, 18, 15)
    assert jig.make_views(images, tf.zeros([4], tf.int32), SEED)["tiles"].shape == (4, 9, 15, 15, 3)
    with pytest.raises(ValueError, match="exceed image_size"):
        zoo.create("jigsaw", **TINY, image_size=32, cut_size=160)  # 39 px tiles


def test_neighbour_names_follow_the_documented_row_major_order():
    for label, (dr, dc) in HAND_OFFSETS.items():
        assert patches.NEIGHBOURS[label] == (1 + dr, 1 + dc)
    assert patches.NEIGHBOUR_NAMES[0] == "top-left" and patches.NEIGHBOUR_NAMES[4] == "right"
    assert patches.NEIGHBOUR_NAMES[7] == "bottom-right"


def test_extract_patches_matches_numpy_slicing(rng):
    images = rng.uniform(size=(3, 12, 10, 3)).astype(np.float32)
    corners = np.array([[[0, 0], [7, 5]], [[3, 1], [8, 6]], [[2, 2], [0, 6]]], np.int32)
    got = patches.extract_patches(tf.constant(images), tf.constant(corners), 4).numpy()
    for b in range(3):
        for k in range(2):
            y, x = corners[b, k]
            np.testing.assert_array_equal(got[b, k], images[b, y:y + 4, x:x + 4])


def test_resample_boxes_matches_numpy_bilinear_sampling(rng):
    images = rng.uniform(size=(2, 12, 10, 3)).astype(np.float32)
    # (y1, x1, y2, x2) in pixel-centre coordinates, written by hand: one exact integer box,
    # one shrunk and shifted by fractions of a pixel, one touching the last row and column.
    boxes = np.array([[[2.0, 3.0, 5.0, 6.0], [0.25, 1.5, 2.75, 4.0]],
                      [[8.0, 6.0, 11.0, 9.0], [4.1, 0.0, 5.6, 1.5]]], np.float32)
    got = patches.resample_boxes(tf.constant(images), tf.constant(boxes), 4).numpy()
    assert got.shape == (2, 2, 4, 4, 3)
    for b, k in itertools.product(range(2), range(2)):
        y1, x1, y2, x2 = boxes[b, k]
        for i, j in itertools.product(range(4), range(4)):
            want = bilinear_sample(images[b], y1 + i * (y2 - y1) / 3, x1 + j * (x2 - x1) / 3)
            np.testing.assert_allclose(got[b, k, i, j], want, atol=1e-5)
    np.testing.assert_allclose(got[0, 0], images[0, 2:6, 3:7], atol=1e-6)  # integer box = slicing


def test_sub_boxes_are_squares_inside_their_boxes_with_scales_in_range():
    corners = tf.constant(np.tile([[[3, 5], [10, 0]]], (2000, 1, 1)), tf.int32)
    boxes = patches.sample_sub_boxes(corners, 7, 0.7, SEED).numpy()
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    c = corners.numpy().astype(np.float32)
    np.testing.assert_allclose(y2 - y1, x2 - x1, atol=1e-5)  # square: one scale for both axes
    scale = (y2 - y1) / 6
    assert scale.min() >= 0.7 - 1e-6 and scale.max() <= 1 + 1e-6
    assert scale.min() < 0.71 and scale.max() > 0.99  # the whole range is used
    # Inside the box's pixel centres [corner, corner + 6], so gaps between patches still hold.
    assert np.all(y1 >= c[..., 0] - 1e-5) and np.all(y2 <= c[..., 0] + 6 + 1e-5)
    assert np.all(x1 >= c[..., 1] - 1e-5) and np.all(x2 <= c[..., 1] + 6 + 1e-5)
    slack = 6 - (y2 - y1)
    place = (y1 - c[..., 0]) / np.maximum(slack, 1e-6)
    assert place[slack > 1].min() < 0.05 and place[slack > 1].max() > 0.95  # placed anywhere in it
    np.testing.assert_array_equal(boxes, patches.sample_sub_boxes(corners, 7, 0.7, SEED).numpy())


def test_cut_patches_is_exact_at_scale_one_and_rejects_scales_outside_zero_one(rng):
    images = tf.constant(rng.uniform(size=(2, 12, 12, 3)).astype(np.float32))
    corners = tf.constant([[[0, 0], [5, 4]], [[1, 2], [3, 3]]], tf.int32)
    np.testing.assert_array_equal(patches.cut_patches(images, corners, 6).numpy(),
                                  patches.extract_patches(images, corners, 6).numpy())
    resampled = patches.cut_patches(images, corners, 6, 0.5, SEED).numpy()
    assert resampled.shape == (2, 2, 6, 6, 3) and not np.allclose(resampled, patches.extract_patches(images, corners, 6))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="min_scale"):
            patches.cut_patches(images, corners, 6, bad, SEED)
    with pytest.raises(ValueError, match="resample_min_scale"):
        zoo.create("relative_patch", **TINY, image_size=32, resample_min_scale=0.0)
    with pytest.raises(ValueError, match="resample_min_scale"):
        zoo.create("jigsaw", **TINY, image_size=32, resample_min_scale=2.0)


@pytest.mark.parametrize("method_name", ["relative_patch", "jigsaw"])
def test_resampled_views_sample_inside_the_patch_boxes(method_name):
    """On coordinate images bilinear sampling is exact, so every resampled patch gives back the
    float box it was sampled from: inside an integer box of the method's geometry, smaller than
    it by at most resample_min_scale, and a neighbour still lies in the labelled direction."""
    method = zoo.create(method_name, **TINY, image_size=32, flip=False, resample_min_scale=0.6,
                        **({"chromatic": "none"} if method_name == "relative_patch" else
                           {"normalize_tiles": False, "grayscale_p": 0.0}))
    views = method.make_views(tf.constant(_coordinate_images(32, 32)), tf.zeros([32], tf.int32), SEED)
    stack = views["patches" if method_name == "relative_patch" else "tiles"].numpy() * 255 / 8
    size = stack.shape[2]
    y1, x1 = stack[:, :, 0, 0, 0], stack[:, :, 0, 0, 1]
    y2, x2 = stack[:, :, -1, -1, 0], stack[:, :, -1, -1, 1]
    np.testing.assert_allclose(y2 - y1, x2 - x1, atol=1e-3)
    scale = (y2 - y1) / (size - 1)
    assert scale.min() >= 0.6 - 1e-3 and scale.max() <= 1 + 1e-3 and scale.std() > 0.05
    assert np.any(np.abs(y1 - np.round(y1)) > 0.1)  # sub-pixel positions occur
    if method_name == "relative_patch":
        g, labels = method.geometry, views["position"].numpy()
        for b in range(32):
            dr, dc = HAND_OFFSETS[int(labels[b])]
            # Each sampled box lies inside a p px box, so the centres move by at most the
            # jitter plus the slack (p - 1)(1 - s) / 2 of each sub-box.
            slack = (g.patch - 1) * (1 - scale[b]) / 2
            dy = (y1[b, 1] + y2[b, 1] - y1[b, 0] - y2[b, 0]) / 2
            dx = (x1[b, 1] + x2[b, 1] - x1[b, 0] - x2[b, 0]) / 2
            assert abs(dy - g.pitch * dr) <= 2 * g.jitter + slack.sum() + 1e-3
            assert abs(dx - g.pitch * dc) <= 2 * g.jitter + slack.sum() + 1e-3
    else:
        perms = method.permutation_array[views["permutation"].numpy()]
        for b in range(32):
            centres = np.stack([(y1[b] + y2[b]) / 2, (x1[b] + x2[b]) / 2], -1)
            order = np.empty(9, int)
            order[perms[b]] = np.arange(9)  # input position of every cell
            rows, cols = centres[order, 0].reshape(3, 3), centres[order, 1].reshape(3, 3)
            assert np.all(np.diff(rows, axis=0) > 0) and np.all(np.diff(cols, axis=1) > 0)


# ---- relative patch method ---------------------------------------------------------------------

def test_relative_patch_views_recover_the_labelled_neighbour_position():
    method = zoo.create("relative_patch", **TINY, image_size=32, chromatic="none", flip=False)
    images = _coordinate_images(64, 32)
    views = method.make_views(tf.constant(images), tf.zeros([64], tf.int32), SEED)
    pair, labels = views["patches"].numpy(), views["position"].numpy()
    g = method.geometry
    assert pair.shape == (64, 2, 7, 7, 3) and labels.dtype == np.int32
    for b in range(64):
        (yc, xc), (yn, xn) = _decode_corner(pair[b, 0]), _decode_corner(pair[b, 1])
        for k, (y, x) in enumerate([(yc, xc), (yn, xn)]):  # the patch is exactly that window
            np.testing.assert_array_equal(pair[b, k], images[b, y:y + 7, x:x + 7] / np.float32(255.0))
        dr, dc = HAND_OFFSETS[int(labels[b])]
        assert abs(yn - yc - g.pitch * dr) <= 2 * g.jitter and abs(xn - xc - g.pitch * dc) <= 2 * g.jitter
        assert max(abs(yn - yc), abs(xn - xc)) - 7 >= g.min_gap


def test_relative_patch_label_follows_a_flipped_image():
    method = zoo.create("relative_patch", **TINY, image_size=32, chromatic="none", flip=True)
    views = method.make_views(tf.constant(_coordinate_images(64, 32)), tf.zeros([64], tf.int32), SEED)
    pair, labels = views["patches"].numpy(), views["position"].numpy()
    flipped = 0
    for b in range(64):
        mirrored = pair[b, 0, 0, 1, 1] < pair[b, 0, 0, 0, 1]  # green (= original column) decreasing
        flipped += mirrored
        (yc, xc), (yn, xn) = _decode_corner(pair[b, 0]), _decode_corner(pair[b, 1])
        dr, dc = HAND_OFFSETS[int(labels[b])]
        dx = -(xn - xc) if mirrored else xn - xc  # in the flipped image, columns run backwards
        g = method.geometry
        assert abs(yn - yc - g.pitch * dr) <= 2 * g.jitter and abs(dx - g.pitch * dc) <= 2 * g.jitter
    assert 0 < flipped < 64


def test_drop_channels_keeps_exactly_one_original_channel(rng):
    x = rng.uniform(0.2, 0.8, size=(50, 2, 6, 6, 3)).astype(np.float32)
    out = patches.drop_channels(tf.constant(x), SEED, noise=0.01).numpy()
    same = np.all(out == x, axis=(2, 3))  # [50, 2, 3]: channel identical to the original
    assert np.all(same.sum(-1) == 1)
    kept = np.argmax(same, -1)
    assert set(kept.ravel()) == {0, 1, 2}  # every channel gets kept sometimes
    for b, k in itertools.product(range(50), range(2)):
        c = kept[b, k]
        channel = x[b, k, ..., c]
        for other in {0, 1, 2} - {c}:  # noise around the kept channel's mean, 1/100 of its std
            noise = out[b, k, ..., other]
            assert abs(noise.mean() - channel.mean()) < 0.01 * channel.std() + 1e-6
            assert 0 < noise.std() < 0.02 * channel.std()


def test_drop_views_of_the_method_keep_one_channel_of_the_undropped_views(rng):
    images = tf.constant(rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8))
    views = {mode: zoo.create("relative_patch", **TINY, image_size=32, chromatic=mode)
             .make_views(images, tf.zeros([16], tf.int32), SEED) for mode in ("none", "drop")}
    np.testing.assert_array_equal(views["none"]["position"], views["drop"]["position"])
    same = np.all(views["drop"]["patches"].numpy() == views["none"]["patches"].numpy(), axis=(2, 3))
    assert np.all(same.sum(-1) == 1)  # per patch, exactly one channel is the original one


def test_green_magenta_projection_matches_numpy_and_hand_values(rng):
    x = rng.uniform(size=(4, 5, 5, 3)).astype(np.float32)
    a = np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0)
    expected = np.clip(x @ (np.eye(3) - np.outer(a, a)), 0, 1)
    np.testing.assert_allclose(patches.project_green_magenta(tf.constant(x)).numpy(), expected, atol=1e-6)
    hand = tf.constant([[[[0.4, 0.4, 0.4], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]]])
    np.testing.assert_allclose(patches.project_green_magenta(hand).numpy()[0, 0],
                               [[0.4, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3], [2 / 3, 2 / 3, 2 / 3]], atol=1e-6)


def test_random_grayscale_extremes(rng):
    x = tf.constant(rng.uniform(size=(3, 9, 4, 4, 3)).astype(np.float32))
    np.testing.assert_array_equal(patches.random_grayscale(x, SEED, 0.0).numpy(), x.numpy())
    gray = patches.random_grayscale(x, SEED, 1.0).numpy()
    luma = x.numpy() @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(gray, np.repeat(luma[..., None], 3, -1), atol=1e-6)


# ---- permutation sets --------------------------------------------------------------------------

def _paper_algorithm_1(num, seed):
    """Noroozi & Favaro's Algorithm 1 as printed: remove the chosen permutation from the pool,
    Hamming distances of the chosen set to the pool, sum over the set, argmax (first on ties)."""
    pool = np.array(list(itertools.permutations(range(9))))
    j = int(np.random.default_rng(seed).integers(len(pool)))
    chosen = []
    for _ in range(num):
        chosen.append(pool[j])
        pool = np.delete(pool, j, axis=0)
        distances = (np.array(chosen)[:, None, :] != pool[None, :, :]).sum(-1)
        j = int(np.argmax(distances.sum(0)))
    return np.array(chosen)


@pytest.mark.parametrize("seed", [0, 7])
def test_greedy_set_matches_the_paper_algorithm(seed):
    np.testing.assert_array_equal(patches.max_hamming_permutations(6, seed), _paper_algorithm_1(6, seed))


def test_hamming_stats_match_brute_force():
    perms = patches.max_hamming_permutations(100, 0)
    pairs = [sum(a != b for a, b in zip(perms[i], perms[j])) for i in range(100) for j in range(i + 1, 100)]
    assert patches.hamming_stats(perms) == (min(pairs), pytest.approx(np.mean(pairs), rel=1e-12))
    assert min(pairs) >= 2 and np.mean(pairs) > 8.0  # ~0.9 of 9 tiles move between two classes


def test_thousand_permutations_are_unique_valid_and_far_apart():
    perms = patches.max_hamming_permutations(1000, 0)  # ~1.5 s on an idle 2-core machine
    assert perms.shape == (1000, 9) and perms.dtype == np.int32
    assert np.all(np.sort(perms, axis=1) == np.arange(9))  # every row is a permutation
    assert len(np.unique(perms, axis=0)) == 1000
    upper = np.triu_indices(len(perms), k=1)  # every unordered pair once, counted in numpy
    distances = (perms[:, None, :] != perms[None, :, :]).sum(-1)[upper]
    low, mean = patches.hamming_stats(perms)
    assert low == int(round(distances.min())) and mean == pytest.approx(distances.mean(), rel=1e-9)


def test_permutation_set_is_deterministic_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    first = patches.permutation_set(50, seed=3)
    path = patches.permutation_path(50, seed=3)
    assert path.startswith(str(tmp_path)) and os.path.exists(path)
    np.testing.assert_array_equal(np.load(path), first)
    np.testing.assert_array_equal(first, patches.max_hamming_permutations(50, 3))  # same seed, same set
    assert not np.array_equal(first, patches.permutation_set(50, seed=4))

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated although cached")
    generate = patches.max_hamming_permutations
    monkeypatch.setattr(patches, "max_hamming_permutations", no_generation)
    np.testing.assert_array_equal(patches.permutation_set(50, seed=3), first)  # read from the file
    monkeypatch.setattr(patches, "max_hamming_permutations", generate)
    np.save(path, np.zeros((50, 9), np.int32))  # a malformed cache file is replaced
    np.testing.assert_array_equal(patches.permutation_set(50, seed=3), first)
    np.testing.assert_array_equal(np.load(path), first)


# ---- jigsaw geometry and views -----------------------------------------------------------------

def test_grid_geometry_and_corners_stay_in_their_cells():
    g = patches.grid_geometry(32, 225 / 256, 64 / 75)
    assert (g.crop, g.cell, g.tile) == (27, 9, 8)
    assert patches.grid_geometry(256, 225 / 256, 64 / 75) == patches.GridGeometry(256, 75, 64)
    corners = patches.sample_grid_corners(3000, g, SEED).numpy()  # [B, 9, 2]
    cells = np.array([[r, c] for r in range(3) for c in range(3)]) * g.cell
    a = corners - cells  # = crop origin + offset inside the cell, offset in [0, cell - tile]
    spread = a.max(1) - a.min(1)
    assert spread.max() <= g.cell - g.tile and spread.max() == g.cell - g.tile
    assert a.min() >= 0 and a.max() - (g.cell - g.tile) <= 32 - g.crop
    assert corners.max() + g.tile <= 32


def test_shuffle_tiles_matches_fancy_indexing(rng):
    tiles = rng.uniform(size=(4, 9, 2, 2, 3)).astype(np.float32)
    perms = np.stack([rng.permutation(9) for _ in range(4)]).astype(np.int32)
    got = patches.shuffle_tiles(tf.constant(tiles), tf.constant(perms)).numpy()
    for b in range(4):
        np.testing.assert_array_equal(got[b], tiles[b][perms[b]])


def test_random_permutations_are_permutations_and_seeded():
    perms = patches.random_permutations(500, SEED).numpy()
    assert perms.dtype == np.int32 and np.all(np.sort(perms, axis=1) == np.arange(9))
    assert len(np.unique(perms, axis=0)) > 490  # 9! = 362880 possibilities
    np.testing.assert_array_equal(perms, patches.random_permutations(500, SEED).numpy())
    assert not np.array_equal(perms, patches.random_permutations(500, tf.constant([1, 3])).numpy())


def _cell_images(b, cell=10):
    """uint8 [b, 3 * cell, 3 * cell, 3]: red = 25 * cell index (row-major), green = 20 * image
    index, blue = row within the cell (to check orientation)."""
    images = np.zeros((b, 3 * cell, 3 * cell, 3), np.uint8)
    for r, c in itertools.product(range(3), range(3)):
        images[:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell, 0] = 25 * (3 * r + c)
    images[..., 1] = 20 * np.arange(b)[:, None, None]
    images[..., 2] = np.tile(np.arange(cell), 3)[None, :, None]
    return images


def _exact_jigsaw(**overrides):
    """Tiles equal to cells (crop = image, tile = cell): no randomness but the permutation."""
    config = dict(**TINY, image_size=30, crop_fraction=1.0, tile_fraction=1.0, normalize_tiles=False,
                  grayscale_p=0.0, flip=False, num_permutations=100)
    return zoo.create("jigsaw", **{**config, **overrides})


def test_jigsaw_tiles_land_where_the_permutation_says_and_the_label_is_its_index():
    method = _exact_jigsaw()
    images = _cell_images(12)
    views = method.make_views(tf.constant(images), tf.zeros([12], tf.int32), SEED)
    tiles, index = views["tiles"].numpy() * 255, views["permutation"].numpy()
    assert tiles.shape == (12, 9, 10, 10, 3) and index.dtype == np.int32
    assert len(set(index)) > 1 and index.min() >= 0 and index.max() < 100
    for b in range(12):
        perm = method.permutation_array[index[b]]
        for i in range(9):
            np.testing.assert_allclose(tiles[b, i, ..., 0], 25 * perm[i], atol=1e-3)  # cell perm[i] at position i
            np.testing.assert_allclose(tiles[b, i, :, 0, 2], np.arange(10), atol=1e-3)  # upright
        np.testing.assert_allclose(tiles[b, ..., 1], 20 * b, atol=1e-3)


def test_jigsaw_tiles_come_from_their_cells_with_random_crops():
    method = zoo.create("jigsaw", **TINY, image_size=32, normalize_tiles=False, grayscale_p=0.0, flip=False)
    g = method.geometry
    views = method.make_views(tf.constant(_coordinate_images(40, 32)), tf.zeros([40], tf.int32), SEED)
    tiles, index = views["tiles"].numpy(), views["permutation"].numpy()
    for b in range(40):
        perm = method.permutation_array[index[b]]
        corners = np.zeros((9, 2), int)
        for i in range(9):
            corners[perm[i]] = _decode_corner(tiles[b, i])  # undo the shuffle
            y, x = corners[perm[i]]
            np.testing.assert_allclose(tiles[b, i] * 255, _coordinate_images(40, 32)[b, y:y + 8, x:x + 8], atol=1e-3)
        a = corners - np.array([[r, c] for r in range(3) for c in range(3)]) * g.cell
        assert np.all(a.max(0) - a.min(0) <= g.cell - g.tile)  # one crop, each tile inside its cell


@pytest.mark.parametrize("k", [1, 3])
def test_jigsaw_plus_plus_replaces_exactly_k_tiles_from_image_i_xor_1(k):
    method = _exact_jigsaw(replace_tiles=k)
    views = method.make_views(tf.constant(_cell_images(8)), tf.zeros([8], tf.int32), SEED)
    tiles, index, replaced = views["tiles"].numpy() * 255, views["permutation"].numpy(), views["replaced"].numpy()
    for b in range(8):
        source = np.round(tiles[b, :, 0, 0, 1] / 20).astype(int)  # image each tile came from
        assert set(source) <= {b, b ^ 1} and np.sum(source == b ^ 1) == k
        np.testing.assert_array_equal(replaced[b], source == b ^ 1)
        perm = method.permutation_array[index[b]]
        np.testing.assert_allclose(tiles[b, :, 0, 0, 0], 25 * perm, atol=1e-3)  # same cells, same order
    assert len({tuple(np.flatnonzero(r)) for r in replaced}) > 1  # the replaced cells vary


def test_pair_partner_is_xor_one_and_odd_batches_pair_the_last_image_backwards():
    np.testing.assert_array_equal(patches.pair_partner(6).numpy(), [1, 0, 3, 2, 5, 4])
    np.testing.assert_array_equal(patches.pair_partner(5).numpy(), [1, 0, 3, 2, 3])


def test_standardized_tiles_reach_the_encoder_as_z_scores(rng):
    x = rng.uniform(size=(3, 9, 5, 5, 3)).astype(np.float32)
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(patches.standardize_tiles(tf.constant(x)).numpy(), (x - mean) / np.sqrt(var + 1e-3),
                               atol=1e-5)
    method = zoo.create("jigsaw", **TINY, image_size=32, grayscale_p=0.0)
    assert method.unit_range_views is False
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    views = method.make_views(tf.constant(images), tf.zeros([4], tf.int32), SEED)
    z = (views["tiles"].numpy() - np.array(method.config.mean)) / np.array(method.config.std)
    np.testing.assert_allclose(z.mean(axis=(2, 3)), 0.0, atol=1e-4)
    assert np.abs(z.std(axis=(2, 3)) - 1).max() < 0.05  # 1 up to the variance floor
    assert zoo.create("jigsaw", **TINY, image_size=32, normalize_tiles=False).unit_range_views is True


def test_view_panels_show_the_inputs():
    rel = zoo.create("relative_patch", **TINY, image_size=32)
    rel_views = rel.make_views(tf.constant(_coordinate_images(4, 32)), tf.zeros([4], tf.int32), SEED)
    panels = rel.view_panels(rel_views, 2)
    label = int(rel_views["position"][2])
    assert (panels[1][0], panels[2][0]) == (f"neighbour: {patches.NEIGHBOUR_NAMES[label]}", f"label {label}")
    layout, p = panels[2][1], rel.geometry.patch  # the pair drawn at (row, col) * (patch + 1 px)
    for (r, c), (_, patch) in zip([(1, 1), patches.NEIGHBOURS[label]], panels[:2]):
        np.testing.assert_array_equal(layout[r * (p + 1):r * (p + 1) + p, c * (p + 1):c * (p + 1) + p], patch)
    jig = zoo.create("jigsaw", **TINY, image_size=32, replace_tiles=2)
    views = jig.make_views(tf.constant(_coordinate_images(4, 32)), tf.zeros([4], tf.int32), SEED)
    panels = jig.view_panels(views, 1)
    assert panels[0][0] == f"permutation {int(views['permutation'][1])}" and panels[1][0] == "solved, 2 from img 0"
    assert panels[0][1].shape == (3 * 8 + 2, 3 * 8 + 2, 3)
    for caption, image in [*rel.view_panels(rel_views, 0), *panels]:
        assert image.ndim == 3 and image.shape[-1] == 3 and 0.0 <= image.min() and image.max() <= 1.0
