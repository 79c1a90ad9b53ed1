"""The reconstruction methods (context encoder, plain and denoising autoencoders) against
independent references: masks against hand-set squares and numpy counts, the overlap border
against a numpy Chebyshev-distance loop, the weighted L2 against hand-computed numbers, the
channel-wise fully connected layer against a numpy einsum (and channels not mixing before the
1x1 convolution), the autoencoder loss against numpy, and the (denoising) inputs against the
clean targets. The shared harness (tests/test_methods.py) runs the methods' steps."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.heads import upsampling_decoder
from zoo.methods.autoencoder import corrupt, reconstruction_l2
from zoo.methods.context_encoder import (ChannelwiseDense, ContextEncoderConfig, block_mask, center_mask,
                                         context_decoder, overlap_border, region_mask, region_weights,
                                         weighted_l2)

TINY = dict(backbone="resnet18", width=0.125, image_size=32)
BATCH = 8


def _images():
    return zoo.data.load_arrays("shapes", "train").images[:BATCH]


def _views(method, seed=(3, 4)):
    return method.make_views(tf.constant(_images()), tf.constant(np.zeros(BATCH, np.int32)), tf.constant(seed))


@pytest.fixture(scope="module")
def context_encoder():
    keras.utils.set_random_seed(0)
    return zoo.create("context_encoder", **TINY)


# ---- masks ------------------------------------------------------------------------------

@pytest.mark.parametrize("size,side,start", [(32, 16, 8), (10, 3, 3), (7, 4, 1)])
def test_center_mask_is_the_stated_square_for_every_image(size, side, start):
    expected = np.zeros((size, size), np.float32)
    expected[start:start + side, start:start + side] = 1  # top-left at (size - side) // 2, by hand
    mask = center_mask(3, size, side).numpy()
    assert mask.shape == (3, size, size)
    for m in mask:
        np.testing.assert_array_equal(m, expected)
    assert mask[0].sum() == side * side


def _covered_by_full_blocks(mask, block):
    """numpy: the union of every block x block square lying wholly inside the mask."""
    size = mask.shape[0]
    covered = np.zeros_like(mask)
    for i in range(size - block + 1):
        for j in range(size - block + 1):
            if mask[i:i + block, j:j + block].all():
                covered[i:i + block, j:j + block] = 1
    return covered


def test_random_blocks_cover_the_requested_fraction_with_whole_blocks():
    size, block, fraction = 32, 8, 0.25
    masks = block_mask(16, size, block, fraction, tf.constant([1, 2])).numpy()
    coverage = masks.mean(axis=(1, 2))
    # the block count closest to the fraction: within half a block's share (64 / 1024 / 2)
    assert np.all(np.abs(coverage - fraction) <= 0.5 * block * block / size ** 2 + 1e-6), coverage
    for m in masks:  # a union of whole 8 x 8 squares, nothing else
        np.testing.assert_array_equal(_covered_by_full_blocks(m, block), m)
    assert len({m.tobytes() for m in masks}) == len(masks)  # every image its own blocks
    np.testing.assert_array_equal(block_mask(16, size, block, fraction, tf.constant([1, 2])).numpy(), masks)
    assert not np.array_equal(block_mask(16, size, block, fraction, tf.constant([1, 3])).numpy(), masks)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_random_regions_remove_the_requested_fraction_in_connected_shapes(fraction):
    size, batch = 32, 16
    masks = region_mask(batch, size, fraction, 4, tf.constant([5, 6])).numpy()
    assert set(np.unique(masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), round(fraction * size * size))  # exactly, per image
    assert len({m.tobytes() for m in masks}) == batch
    # shapes, not scattered pixels: most removed pixels have their right and lower neighbours
    # removed too (about `fraction` of them would for pixels drawn independently)
    pairs = np.concatenate([(masks[:, :, 1:] * masks[:, :, :-1]).ravel(), (masks[:, 1:] * masks[:, :-1]).ravel()])
    neighbours = pairs.sum() / (masks[:, :, 1:].sum() + masks[:, 1:].sum())
    assert neighbours > 0.8, neighbours


def test_the_method_makes_the_configured_masks_and_fills_them_with_the_mean(context_encoder):
    views = _views(context_encoder)
    images, context, mask = (views[k].numpy() for k in ("images", "context", "mask"))
    np.testing.assert_allclose(mask.mean(axis=(1, 2)), 0.25)  # the default: random regions, 1/4
    removed = mask[..., None] > 0
    np.testing.assert_array_equal(np.where(removed, 0, context), np.where(removed, 0, images))
    np.testing.assert_allclose(context[mask > 0], np.broadcast_to(np.float32(zoo.backbones.IMAGENET_MEAN),
                                                                  context[mask > 0].shape), atol=1e-7)
    center = zoo.create("context_encoder", **TINY, mask="center")
    np.testing.assert_array_equal(_views(center)["mask"].numpy(), center_mask(BATCH, 32, 16).numpy())
    with pytest.raises(ValueError, match="mask='square'"):
        zoo.create("context_encoder", **TINY, mask="square")


# ---- overlap border and the weighted L2 ---------------------------------------------------

def test_overlap_border_is_the_ring_of_context_within_overlap_pixels():
    rng = np.random.default_rng(0)
    mask = (rng.random((2, 9, 9)) < 0.15).astype(np.float32)
    for overlap in (1, 2):
        expected = np.zeros_like(mask)
        for b, i, j in zip(*np.nonzero(mask == 0)):  # a context pixel within Chebyshev distance `overlap`
            near = mask[b, max(0, i - overlap):i + overlap + 1, max(0, j - overlap):j + overlap + 1]
            expected[b, i, j] = near.max()
        np.testing.assert_array_equal(overlap_border(tf.constant(mask), overlap).numpy(), expected)
    np.testing.assert_array_equal(overlap_border(tf.constant(mask), 0).numpy(), 0)


def test_weighted_l2_by_hand_on_a_tiny_case():
    # image 0: a 4x4 image, removed 2x2 centre (4 px), 1 px overlap: the other 12 px are the border.
    # image 1: removed pixel (0, 0); its border is (0, 1), (1, 0), (1, 1); 12 pixels are outside.
    mask = np.zeros((2, 4, 4), np.float32)
    mask[0, 1:3, 1:3] = 1
    mask[1, 0, 0] = 1
    target = np.zeros((2, 4, 4, 3), np.float32)
    target[0] = [1.0, 0.0, 0.5]              # squared error per pixel: (1 + 0 + 0.25) / 3 = 5 / 12
    target[1, 0, 0] = 1.0                    # squared error 1 inside
    target[1, 0, 1] = target[1, 1, 0] = target[1, 1, 1] = 0.5  # 0.25 on the border
    target[1, 2:, :] = 10.0                  # far outside the region: must not count
    predicted = np.zeros_like(target)
    weights = region_weights(tf.constant(mask), 1, 0.999, 0.001)
    np.testing.assert_allclose(weights.numpy()[0], np.where(mask[0] > 0, 0.999, 0.001))
    # image 0: (4 x 0.999 + 12 x 0.001) x 5/12 over 16 predicted pixels
    image0 = (4 * 0.999 + 12 * 0.001) * (5 / 12) / 16
    # image 1: (1 x 0.999 x 1 + 3 x 0.001 x 0.25) over 4 predicted pixels
    image1 = (0.999 + 3 * 0.001 * 0.25) / 4
    loss = weighted_l2(tf.constant(predicted), tf.constant(target), weights)
    assert loss.dtype == tf.float32
    assert float(loss) == pytest.approx((image0 + image1) / 2, rel=1e-6)
    # the paper's weights (train.lua: wtl2 0.999 inside, 10 x 0.999 on the overlap border)
    config = ContextEncoderConfig()
    assert (config.inside_weight, config.border_weight) == (0.999, pytest.approx(9.99))
    paper = weighted_l2(tf.constant(predicted), tf.constant(target),
                        region_weights(tf.constant(mask), 1, config.inside_weight, config.border_weight))
    expected = ((4 * 0.999 + 12 * 9.99) * (5 / 12) / 16 + (0.999 + 3 * 9.99 * 0.25) / 4) / 2
    assert float(paper) == pytest.approx(expected, rel=1e-6)


def test_the_step_loss_is_the_weighted_l2_of_the_decoded_image(context_encoder):
    views = _views(context_encoder)
    loss, metrics = context_encoder.pretext_loss(views, training=False)
    decoded = context_encoder.decode(views["context"]).numpy().astype(np.float64)
    mask, images = views["mask"].numpy(), views["images"].numpy()
    border = overlap_border(views["mask"], 1).numpy()  # 1 px at 32 px (1/32 of the side)
    weights = 0.999 * mask + 9.99 * border
    per_image = (weights * ((decoded - images) ** 2).mean(-1)).sum((1, 2)) / ((mask + border) > 0).sum((1, 2))
    assert float(loss) == pytest.approx(per_image.mean(), rel=1e-5) and metrics == {}
    inpainted = context_encoder.inpaint(views).numpy()
    removed = mask[..., None] > 0
    np.testing.assert_allclose(inpainted, np.where(removed, decoded, views["context"].numpy()), atol=1e-6)


# ---- the channel-wise fully connected layer ---------------------------------------------

def test_channelwise_dense_against_numpy_einsum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    layer = ChannelwiseDense()
    layer.build(x.shape)
    kernel = rng.normal(size=(4, 9, 9)).astype(np.float32)
    bias = rng.normal(size=(4, 9)).astype(np.float32)
    layer.set_weights([kernel, bias])
    flat = x.reshape(2, 9, 4)  # positions row-major
    expected = np.einsum("bpc,cpq->bqc", flat, kernel) + bias.T[None]
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected.reshape(2, 3, 3, 4), rtol=1e-5, atol=1e-5)
    # every output position of a channel depends on every input position of that channel
    assert np.all(np.abs(kernel) > 0) and layer.kernel.shape == (4, 9, 9)


def test_channels_mix_only_in_the_1x1_convolution_after_the_channelwise_layer():
    keras.utils.set_random_seed(2)
    decoder = context_decoder((4, 4, 6), 32, 6, name="cd")
    pre_mix = keras.Model(decoder.input, decoder.get_layer("cd_channelwise_fc").output)
    post_mix = keras.Model(decoder.input, decoder.get_layer("cd_mix").output)
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 6)).astype(np.float32)
    bumped = x.copy()
    bumped[..., 2] += 1.0  # perturb input channel 2 only
    change = np.abs(pre_mix(bumped).numpy() - pre_mix(x).numpy()).max(axis=(0, 1, 2))
    assert change[2] > 1e-3 and np.all(np.delete(change, 2) == 0), change
    mixed = np.abs(post_mix(bumped).numpy() - post_mix(x).numpy()).max(axis=(0, 1, 2))
    assert np.all(mixed > 1e-4), mixed  # the 1x1 convolution spreads it to every channel
    assert decoder.output.shape[1:] == (32, 32, 3)


def test_decoder_heads_are_not_part_of_the_exported_encoder(context_encoder):
    encoder_names = {v.path for v in context_encoder.encoder.weights}
    decoder_names = {v.path for v in context_encoder.decoder.weights}
    assert decoder_names and not encoder_names & decoder_names
    assert not any("channelwise" in name or "decoder" in name for name in encoder_names)
    assert context_encoder.encoder.output_shape == (None, context_encoder.feature_dim)


def test_upsampling_decoder_needs_a_power_of_two_factor():
    assert upsampling_decoder((4, 4, 8), 32, 16, name="d").output.shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="power of 2"):
        upsampling_decoder((5, 5, 8), 36, 16, name="d")
    with pytest.raises(ValueError, match="power of 2"):
        zoo.create("autoencoder", **{**TINY, "image_size": 36})  # a 5 x 5 stage4 map


# ---- autoencoders -----------------------------------------------------------------------

def test_reconstruction_l2_against_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 4, 5, 3)), rng.random((3, 4, 5, 3))
    expected = np.mean([np.mean((a[i] - b[i]) ** 2) for i in range(3)])
    loss = reconstruction_l2(tf.constant(a, tf.float32), tf.constant(b, tf.float32))
    assert loss.dtype == tf.float32 and float(loss) == pytest.approx(expected, rel=1e-6)


def test_plain_autoencoder_input_is_its_target_and_the_loss_is_numpy_l2():
    keras.utils.set_random_seed(0)
    method = zoo.create("autoencoder", **TINY)
    assert method.config.noise == "none"
    views = _views(method)
    np.testing.assert_array_equal(views["inputs"].numpy(), views["images"].numpy())
    loss, _ = method.pretext_loss(views)
    decoded = method.decode(views["inputs"]).numpy().astype(np.float64)
    assert float(loss) == pytest.approx(np.mean((decoded - views["images"].numpy()) ** 2), rel=1e-5)


def test_denoising_autoencoder_corrupts_the_input_and_keeps_the_clean_target():
    method = zoo.create("denoising_autoencoder", **TINY)
    assert method.config.noise == "masking" and method.config.masking_fraction == 0.25
    views = _views(method)
    inputs, images = views["inputs"].numpy(), views["images"].numpy()
    assert not np.array_equal(inputs, images)
    zeroed = (inputs == 0) & (images > 0)
    assert zeroed.mean() / (images > 0).mean() == pytest.approx(0.25, abs=0.02)  # of 24,576 values
    np.testing.assert_array_equal(inputs[inputs != 0], images[inputs != 0])  # the rest is untouched
    plain = zoo.create("autoencoder", **TINY)
    np.testing.assert_array_equal(_views(plain)["images"].numpy(), images)  # the same crops, same target


def test_gaussian_noise_has_the_stated_std_and_stays_in_range():
    images = tf.fill([4, 32, 32, 3], 0.5)
    noisy = corrupt(images, "gaussian", tf.constant([7, 8]), noise_std=0.1).numpy()
    difference = noisy - 0.5
    assert abs(difference.mean()) < 0.005 and difference.std() == pytest.approx(0.1, rel=0.05)
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    edge = corrupt(tf.zeros([2, 8, 8, 3]), "gaussian", tf.constant([7, 8]), noise_std=0.1).numpy()
    assert edge.min() == 0.0 and edge.max() > 0.0  # clipped to [0, 1], not wrapped
    np.testing.assert_array_equal(corrupt(images, "none", tf.constant([7, 8])).numpy(), images.numpy())
    with pytest.raises(ValueError, match="noise='salt'"):
        zoo.create("denoising_autoencoder", **TINY, noise="salt")
