"""PIRL against numpy: the g head (per-tile projection, concatenation, projection), the loss
with a hand-made memory bank (whole bank and sampled negatives), the mixing weight lambda at 0
and 1 reducing to each term, and the fit step reading the old bank before updating the batch's
rows with f(v_I); the jigsaw view and its panels."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.heads import encode_stack

TINY = dict(backbone="resnet18", width=0.125, image_size=32)
BATCH, BANK = 8, 16
IDS = np.arange(3, 3 + BATCH)


def _pirl(**overrides):
    keras.utils.set_random_seed(0)
    return zoo.create("pirl", **{**TINY, "num_examples": BANK, **overrides})


def _views(method, seed=(1, 2)):
    # random images: the module-scoped fixture runs outside the per-test cache directory
    images = np.random.default_rng(3).integers(0, 256, size=(BATCH, 40, 40, 3), dtype=np.uint8)
    return method.make_views(tf.constant(images), tf.constant(IDS, tf.int32), tf.constant(seed))


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _embeddings(method, views):
    """f(v_I) and g(v_J) from the encoder's features and the heads' kernels, in numpy."""
    dense = method.image_head.layers[-1]
    h = method.encoder(views["image"], training=True).numpy()
    f = _normalize(h @ dense.kernel.numpy() + dense.bias.numpy())
    tiles = encode_stack(method.encoder, views["tiles"], True).numpy()  # [B, 9, D], input order
    tile_dense = method.jigsaw_head.get_layer("jigsaw_head_tile")
    out_dense = method.jigsaw_head.get_layer("jigsaw_head_out")
    per_tile = tiles @ tile_dense.kernel.numpy() + tile_dense.bias.numpy()  # shared per tile
    g = _normalize(per_tile.reshape(BATCH, -1) @ out_dense.kernel.numpy() + out_dense.bias.numpy())
    return f, g


def _ce(v, bank, ids, t, negatives=None):
    """Softmax cross-entropy of the positive m_id against the negatives (whole bank, or the
    sampled rows with collisions with the own id dropped), float64."""
    losses = []
    for i in range(len(v)):
        if negatives is None:
            logits, pos = bank @ v[i] / t, ids[i]
        else:
            rows = [ids[i]] + [j for j in negatives[i] if j != ids[i]]
            logits, pos = bank[rows] @ v[i] / t, 0
        top = logits.max()
        losses.append(top + np.log(np.exp(logits - top).sum()) - logits[pos])
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def setup():
    method = _pirl()
    bank = _normalize(np.random.default_rng(0).normal(size=(BANK, 128))).astype(np.float32)
    method.memory_bank.features.assign(bank)
    views = _views(method)
    f, g = _embeddings(method, views)
    return method, bank.astype(np.float64), views, f, g


def test_views_image_and_shuffled_tiles(setup):
    method, _, views, _, _ = setup
    assert views["image"].shape == (BATCH, 32, 32, 3)
    assert views["tiles"].shape == (BATCH, 9, 8, 8, 3)  # 32 px -> 3 cells of 10 px, 8 px tiles
    assert method.geometry.tile == 8 and method.geometry.cell == 10
    perms = views["permutation"].numpy()
    assert all(sorted(p) == list(range(9)) for p in perms) and len({tuple(p) for p in perms}) > 1
    for key in ("image", "tiles"):
        assert 0.0 <= float(tf.reduce_min(views[key])) and float(tf.reduce_max(views[key])) <= 1.0
    panels = method.view_panels({k: v.numpy() for k, v in views.items()}, 2)
    assert [p[1].shape for p in panels] == [(32, 32, 3), (26, 26, 3), (26, 26, 3)]
    # "in place": the tile at input position i drawn in cell perms[i]
    tile = views["tiles"][2, 0].numpy()
    r, c = divmod(int(perms[2, 0]), 3)
    np.testing.assert_array_equal(panels[2][1][r * 9:r * 9 + 8, c * 9:c * 9 + 8], tile)


@pytest.mark.parametrize("num_negatives", [0, 6])
def test_loss_matches_numpy_with_a_hand_made_bank(setup, num_negatives):
    method, bank, views, f, g = setup
    views = dict(views)
    negatives = None
    if num_negatives:
        negatives = np.random.default_rng(1).integers(0, BANK, size=(BATCH, num_negatives)).astype(np.int32)
        negatives[0, 0] = IDS[0]  # a drawn negative that is the image's own entry is left out
        views["negatives"] = tf.constant(negatives)
    t = method.config.temperature
    expected = 0.5 * _ce(g, bank, IDS, t, negatives) + 0.5 * _ce(f, bank, IDS, t, negatives)
    loss, metrics = method.pretext_loss(views, training=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert set(metrics) == {"jigsaw_accuracy", "image_accuracy"}


def test_mixing_weight_at_0_and_1_gives_each_term(setup):
    method, bank, views, f, g = setup
    t = method.config.temperature
    jigsaw_term, image_term = _ce(g, bank, IDS, t), _ce(f, bank, IDS, t)
    assert abs(jigsaw_term - image_term) > 1e-3
    config = method.config
    try:
        for lam, expected in ((1.0, jigsaw_term), (0.0, image_term), (0.25, 0.25 * jigsaw_term + 0.75 * image_term)):
            method.config = dataclasses.replace(config, loss_weight=lam)
            with tf.GradientTape() as tape:
                loss, _ = method.pretext_loss(views, training=True)
            assert float(loss) == pytest.approx(expected, rel=1e-5), lam
            heads = method.image_head.trainable_variables + method.jigsaw_head.trainable_variables
            grads = tape.gradient(loss, heads)
            image_grad = any(g is not None and np.any(g.numpy()) for g in grads[:2])
            jigsaw_grad = any(g is not None and np.any(g.numpy()) for g in grads[2:])
            assert (image_grad, jigsaw_grad) == (lam < 1.0, lam > 0.0), lam
    finally:
        method.config = config
    with pytest.raises(ValueError, match="loss_weight"):
        zoo.create("pirl", **TINY, loss_weight=1.5)


def test_fit_step_uses_the_old_bank_then_updates_the_batch_rows(tmp_path):
    method = _pirl()
    assert method.bank_size == BANK
    bank_paths = {w.path for w in method.memory_bank.weights}
    assert bank_paths <= {w.path for w in method.non_trainable_weights}
    assert not bank_paths & {w.path for w in method.encoder.weights}
    method.compile(optimizer=keras.optimizers.SGD(0.1))
    views = _views(method)
    old = method.memory_bank.features.numpy().astype(np.float64)
    loss_on_old_bank, _ = method.pretext_loss(views, training=True)
    f, _ = _embeddings(method, views)
    history = method.fit(tf.data.Dataset.from_tensors(views), epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(float(loss_on_old_bank), rel=1e-5)
    expected = old.copy()
    expected[IDS] = _normalize(0.5 * old[IDS] + 0.5 * f)  # m_I <- normalize(0.5 m_I + 0.5 f(v_I))
    new = method.memory_bank.features.numpy()
    np.testing.assert_allclose(new, expected, atol=1e-5)
    untouched = np.setdiff1d(np.arange(BANK), IDS)
    np.testing.assert_array_equal(new[untouched], old[untouched].astype(np.float32))
    method.evaluate(tf.data.Dataset.from_tensors(views), verbose=0)  # evaluation leaves the bank alone
    np.testing.assert_array_equal(method.memory_bank.features.numpy(), new)
    method.save_weights(tmp_path / "pirl.weights.h5")
    keras.utils.set_random_seed(5)
    restored = zoo.create("pirl", **TINY, num_examples=BANK, bank_seed=7)
    restored.load_weights(tmp_path / "pirl.weights.h5")
    np.testing.assert_array_equal(restored.memory_bank.features.numpy(), new)
