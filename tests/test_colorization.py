"""Colorization (zoo/color.py, zoo/methods/colorization.py) against independent references:
scikit-image's Lab conversion, CIE values computed by hand, and numpy loops written from the
paper's formulas."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import color
from zoo.backbones import build_backbone, resnet
from zoo.encoder import ImageEncoder
from zoo.methods.colorization import rebalanced_cross_entropy

skimage_color = pytest.importorskip("skimage.color")


def _tiny(**overrides):
    keras.utils.set_random_seed(1)
    return zoo.create("colorization", **{"backbone": "resnet18", "width": 0.125, "image_size": 32, **overrides})


def _images(n, seed=0):
    """uint8 [n, 32, 32, 3]: smooth random colour fields (up-sampled 4 x 4 noise)."""
    noise = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.round(tf.image.resize(noise, (32, 32)).numpy()).astype(np.uint8)


def _random_colours(n, seed=0):
    rng = np.random.default_rng(seed)
    corners = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], np.float64)
    return np.concatenate([corners, rng.random((n, 3)), rng.integers(0, 256, (n, 3)) / 255.0])


def test_rgb_to_lab_matches_scikit_image():
    rgb = _random_colours(2000)
    expected = skimage_color.rgb2lab(rgb[:, None])[:, 0]
    np.testing.assert_allclose(color.rgb_to_lab(rgb).numpy(), expected, atol=1e-3)


def test_lab_of_hand_computed_cie_cases():
    # white, black, mid grey and sRGB red: L = 116 f(Y) - 16 etc. with the sRGB matrix, D65 white.
    # a and b of greys within 1e-2 of 0: the 6-digit matrix's rows sum to the white point to ~1e-5.
    rgb = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
    grey_y = ((0.5 + 0.055) / 1.055) ** 2.4
    lab = color.rgb_to_lab(rgb).numpy()
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=1e-2)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[2], [116 * grey_y ** (1 / 3) - 16, 0, 0], atol=1e-2)
    np.testing.assert_allclose(lab[3], [53.2408, 80.0925, 67.2032], atol=1e-2)  # the textbook sRGB red
    np.testing.assert_allclose(color.rgb_to_lightness(rgb).numpy()[:, 0], lab[:, 0] / 100, atol=1e-6)


def test_lab_to_rgb_inverts_rgb_to_lab_and_matches_scikit_image():
    rgb = _random_colours(2000, seed=1)
    lab = skimage_color.rgb2lab(rgb[:, None])[:, 0]
    np.testing.assert_allclose(color.lab_to_rgb(lab).numpy(), rgb, atol=1e-3)
    # outside the gamut: clipped to [0, 1] as scikit-image's lab2rgb clips
    wild = np.array([[50.0, 120.0, -120.0], [90.0, -100.0, 90.0], [20.0, 60.0, 60.0]])
    with np.testing.suppress_warnings() as sup:
        sup.filter(UserWarning)
        expected = skimage_color.lab2rgb(wild[:, None])[:, 0]
    np.testing.assert_allclose(color.lab_to_rgb(wild).numpy(), expected, atol=1e-3)


def test_ab_bins_are_the_grid_10_bins_srgb_colours_fall_in():
    bins = color.ab_bins()
    # the paper's 313 (pts_in_hull.npy) is not reproducible from sRGB: see zoo.color.ab_bins
    assert bins.shape == (261, 2)
    np.testing.assert_array_equal(bins % 10, 0)
    # reference: scikit-image's Lab of every colour on the RGB cube's surface, nearest centre
    levels = np.arange(0, 256, 1) / 255.0
    u, v = [g.ravel() for g in np.meshgrid(levels, levels)]
    surface = np.concatenate([np.stack([f if k == j else (u if (j - k) % 3 == 1 else v) for j in range(3)], -1)
                              for k in range(3) for f in (np.zeros_like(u), np.ones_like(u))])
    ab = skimage_color.rgb2lab(surface[:, None])[:, 0, 1:]
    assert {tuple(p) for p in np.round(ab / 10) * 10} == {tuple(p) for p in bins}
    # and interior colours fall in the same bins
    inner = np.random.default_rng(2).integers(0, 256, (30_000, 3)) / 255.0
    inner_ab = np.round(skimage_color.rgb2lab(inner[:, None])[:, 0, 1:] / 10) * 10
    assert {tuple(p) for p in inner_ab} <= {tuple(p) for p in bins}


def test_soft_encode_matches_numpy_gaussian_over_five_nearest_bins():
    bins = color.ab_bins()
    ab = np.random.default_rng(3).uniform(-80, 80, (2, 3, 4, 2))
    soft = color.soft_encode(ab, bins).numpy()
    assert soft.shape == (2, 3, 4, len(bins))
    for index in np.ndindex(ab.shape[:-1]):
        distances = np.sqrt(((bins - ab[index]) ** 2).sum(1))
        nearest = np.argsort(distances)[:5]
        weights = np.exp(-distances[nearest] ** 2 / (2 * 5.0 ** 2))
        expected = np.zeros(len(bins))
        expected[nearest] = weights / weights.sum()
        np.testing.assert_allclose(soft[index], expected, atol=1e-5)


def test_class_rebalancing_weights_match_numpy():
    bins = color.ab_bins().astype(np.float64)
    q = len(bins)
    counts = np.random.default_rng(4).integers(0, 50, q).astype(np.float64)
    counts[:100] = 0  # bins never seen still get a weight, from the smoothing and the uniform mix
    p = counts / counts.sum()
    smoothed = np.zeros(q)
    for i in range(q):
        for j in range(q):
            smoothed[i] += p[j] * np.exp(-((bins[i] - bins[j]) ** 2).sum() / (2 * 5.0 ** 2))
    smoothed /= smoothed.sum()
    expected = 1.0 / (0.5 * smoothed + 0.5 / q)
    expected /= (smoothed * expected).sum()
    weights = color.class_rebalancing_weights(counts, bins)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert abs((smoothed * weights).sum() - 1.0) < 1e-5
    # lambda = 1: every weight 1; a uniform prior: every weight 1
    np.testing.assert_allclose(color.class_rebalancing_weights(counts, bins, lam=1.0), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="counts must be 261"):
        color.class_rebalancing_weights(counts[:10], bins)


def test_annealed_mean_matches_numpy():
    bins = color.ab_bins()
    logits = np.random.default_rng(5).normal(size=(3, len(bins)))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    annealed = np.exp(np.log(p) / 0.38)
    annealed /= annealed.sum(-1, keepdims=True)
    np.testing.assert_allclose(color.annealed_mean(p, bins).numpy(), annealed @ bins, atol=1e-3)
    np.testing.assert_allclose(color.annealed_mean(p, bins, temperature=1.0).numpy(), p @ bins, atol=1e-3)
    np.testing.assert_allclose(color.annealed_mean(p, bins, temperature=1e-3).numpy(), bins[p.argmax(-1)], atol=1e-3)


def test_rebalanced_cross_entropy_matches_numpy():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
    targets = rng.random((2, 3, 3, 7)).astype(np.float32)
    targets /= targets.sum(-1, keepdims=True)
    weights = rng.uniform(0.5, 2.0, 7).astype(np.float32)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.mean(-(targets * log_p).sum(-1) * weights[targets.argmax(-1)])
    assert abs(float(rebalanced_cross_entropy(logits, targets, weights)) - expected) < 1e-5


def test_bin_counts_and_the_cache_of_class_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    bins = color.ab_bins()
    images = np.zeros((3, 16, 16, 3), np.uint8)
    images[..., 0] = 255  # pure red: every target pixel in the bin nearest to red's ab (80.09, 67.20)
    counts = color.bin_counts(images, bins, image_size=32, size=8)
    red_bin = np.argmin(((bins - [80.0925, 67.2032]) ** 2).sum(1))
    assert counts[red_bin] == 3 * 8 * 8 and counts.sum() == 3 * 8 * 8
    first = color.cached_class_weights(images, bins, 32, 8)
    (path,) = [os.path.join(tmp_path, "colorization", f) for f in os.listdir(tmp_path / "colorization")]
    np.testing.assert_allclose(first, color.class_rebalancing_weights(counts, bins))
    np.save(path, np.full(len(bins), 7.0, np.float32))  # the second call reads the cache, not the images
    np.testing.assert_array_equal(color.cached_class_weights(images, bins, 32, 8), 7.0)
    assert not np.array_equal(color.cached_class_weights(images[:2], bins, 32, 8), 7.0)  # another data set


def test_encoder_on_rgb_equals_the_inner_network_on_lightness():
    method = _tiny()
    assert method.encoder.input_shape[-1] == 3 and method.encoder.get_layer("normalize").input.shape[-1] == 1
    inner = resnet(18, width=0.125, stem="cifar", mean=(0.5,), std=(0.25,), in_channels=1, rgb_input=False)
    inner.set_weights(method.encoder.get_weights())
    rgb = np.random.default_rng(7).random((2, 32, 32, 3)).astype(np.float32)
    lightness = skimage_color.rgb2lab(rgb)[..., :1] / 100.0
    np.testing.assert_allclose(method.encoder(rgb).numpy(), inner(lightness.astype(np.float32)).numpy(), atol=1e-4)
    # an ImageEncoder (what zoo.load returns) takes uint8 RGB, and saves and reloads in safe mode
    encoder = ImageEncoder(method.encoder, 32)
    uint8 = np.round(rgb * 255).astype(np.uint8)
    expected = inner(skimage_color.rgb2lab(uint8 / 255.0)[..., :1].astype(np.float32) / 100.0).numpy()
    np.testing.assert_allclose(encoder(uint8).numpy(), expected, atol=1e-4)


def test_image_encoder_with_lightness_backbone_saves_and_reloads(tmp_path):
    encoder = ImageEncoder(build_backbone("resnet18", width=0.125, mean=(0.5,), std=(0.25,)), 32)
    images = np.random.default_rng(8).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    encoder.save(tmp_path / "e.keras")
    loaded = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(images).numpy(), encoder(images).numpy(), atol=1e-6)


def test_backbone_channel_options_are_checked():
    with pytest.raises(ValueError, match="one mean and one std value per channel"):
        build_backbone("resnet18", width=0.125, in_channels=1)
    with pytest.raises(ValueError, match="takes RGB only"):
        build_backbone("vit_tiny", mean=(0.5,), std=(0.25,))
    rgb = build_backbone("resnet18", width=0.125)
    assert "rgb_to_lightness" not in [layer.name for layer in rgb.layers]  # RGB backbones unchanged


def test_head_predicts_bins_at_a_quarter_of_the_resolution_and_loss_is_rebalanced():
    method = _tiny()
    views = method.make_views(tf.constant(_images(4)), tf.constant([0] * 4), tf.constant([1, 2]))
    assert method.logits(views["images"]).shape == (4, 8, 8, 261)
    plain, _ = method.pretext_loss(views)
    method.class_weights.assign(np.full(261, 2.0, np.float32))
    doubled, metrics = method.pretext_loss(views)
    assert abs(float(doubled) - 2 * float(plain)) < 1e-4 * float(plain)
    assert 0.0 <= float(metrics["bin_accuracy"]) <= 1.0


def test_on_epoch_start_sets_the_class_weights_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    method = _tiny()
    images = _images(40)
    assert int(method.class_weights_computed.numpy()) == 0
    np.testing.assert_array_equal(method.class_weights.numpy(), 1.0)
    method.on_epoch_start(0, images)
    bins = color.ab_bins()
    expected = color.class_rebalancing_weights(color.bin_counts(images, bins, 32, 8), bins)
    np.testing.assert_allclose(method.class_weights.numpy(), expected, rtol=1e-6)
    method.on_epoch_start(1, images[:10])  # already computed: kept
    np.testing.assert_allclose(method.class_weights.numpy(), expected, rtol=1e-6)
    names = [v.path for v in method.non_trainable_weights]
    assert any(n.endswith("class_weights") for n in names)  # so checkpoints hold them
    panels = method.view_panels(method.make_views(tf.constant(images[:2]), tf.constant([0, 0]),
                                                  tf.constant([0, 0])), 0)
    assert [c.split(":")[0] for c, _ in panels] == ["input", "true ab at L = 50", "target", "predicted"]


def test_exported_colorization_encoder_loads_and_takes_rgb(tmp_path):
    """The export folder of a colorization run records a one-channel mean / std; zoo.load accepts it
    and rebuilds the encoder, which still takes RGB images and gives the run encoder's features."""
    from export.cli import main as zoo_export
    from run_folders import untrained_run_folder
    from trainers.runs import run_encoder
    run = untrained_run_folder(str(tmp_path / "run"), "shapes?n=120", method="colorization")
    zoo_export([run, "--name", "tiny_colorization", "--to", str(tmp_path), "--no-saved-model"])
    out = str(tmp_path / "tiny_colorization")
    with open(os.path.join(out, "metadata.json")) as f:
        assert len(json.load(f)["input"]["mean"]) == 1
    images = zoo.data.load_arrays("shapes?n=120", "val").images[:4]
    expected = run_encoder(run)[2](images).numpy()
    np.testing.assert_allclose(zoo.load(out)(images).numpy(), expected, atol=1e-5)
