"""zoo.eval against independent references: hand-computed kNN votes, a brute-force numpy
kNN, a numpy re-implementation of the linear-probe optimiser and the optimality condition of
its objective, and the model called directly for feature extraction."""
import os

import keras
import numpy as np
import pytest

from zoo.eval import extract_features, knn_accuracy, knn_predict, linear_probe
from zoo.eval import linear as linear_module


# ----------------------------------------------------------------------------------- kNN

def _unit(degrees, length=1.0):
    a = np.deg2rad(degrees)
    return [length * np.cos(a), length * np.sin(a)]


# Five 2-D training points at angles 0, 60, -60, 180, 120 degrees with deliberately unequal
# lengths (kNN must L2-normalise: by raw dot product the long class-1 points would win).
BANK = np.array([_unit(0, 0.2), _unit(60, 3.0), _unit(-60, 3.0), _unit(180, 1.0),
                 _unit(120, 2.0)], np.float32)
BANK_LABELS = np.array([0, 1, 1, 1, 2])
QUERY = np.array([[1.0, 0.0]], np.float32)


def test_knn_hand_computed_weighted_vote_beats_majority():
    # Cosines to the query (angle 0): 1, 0.5, 0.5, -1, -0.5. k=3 takes points 0, 1, 2:
    # majority vote says class 1 (two votes against one), but with t=0.1 the weights are
    # class 0: e^(1/0.1) = e^10 = 22026, class 1: 2 e^(0.5/0.1) = 2 e^5 = 297 -> class 0.
    assert knn_predict(BANK, BANK_LABELS, QUERY, 3, k=3, temperature=0.1).tolist() == [0]
    # With t=1 the same neighbours weigh class 0: e^1 = 2.72, class 1: 2 e^0.5 = 3.30 -> 1.
    assert knn_predict(BANK, BANK_LABELS, QUERY, 3, k=3, temperature=1.0).tolist() == [1]
    # k=200 > 5 points uses the whole bank; t=1: class 0: 2.72, class 1: 3.30 + e^-1 = 3.67,
    # class 2: e^-0.5 = 0.61 -> 1; t=0.1: e^10 against 2 e^5 + e^-10 -> 0.
    assert knn_predict(BANK, BANK_LABELS, QUERY, 3, k=200, temperature=1.0).tolist() == [1]
    assert knn_predict(BANK, BANK_LABELS, QUERY, 3, k=200, temperature=0.1).tolist() == [0]


def test_knn_tie_goes_to_lowest_class():
    # The query (1, 1) is equally similar to both points; class 2 comes first in the bank.
    bank = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    query = np.array([[1.0, 1.0]], np.float32)
    assert knn_predict(bank, [2, 1], query, 3, k=2).tolist() == [1]


def _knn_reference(bank, labels, queries, num_classes, k, temperature):
    """Brute force in float64: every query against every bank row, stable sort, loop vote."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    predictions = []
    for q in queries.astype(np.float64):
        similarity = bank.astype(np.float64) @ q
        votes = np.zeros(num_classes)
        for j in np.argsort(-similarity, kind="stable")[:k]:
            votes[labels[j]] += np.exp(similarity[j] / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.07), (20, 0.5), (200, 0.1),
                                           (20, 0.005), (1000, 1.0)])
def test_knn_matches_brute_force(rng, k, temperature):
    # 300 bank points in 16-D with clustered classes (so votes are not all noise); 101
    # queries in batches of 16 leave a partial last batch; k=1000 exceeds the bank; t=0.005
    # overflows float32 if exp(s / t) is taken without rescaling (e^(0.5 / 0.005) > 3.4e38).
    centres = rng.normal(size=(5, 16))
    labels = rng.integers(0, 5, 300)
    bank = (centres[labels] + rng.normal(size=(300, 16))).astype(np.float32)
    query_labels = rng.integers(0, 5, 101)
    queries = (centres[query_labels] + rng.normal(size=(101, 16))).astype(np.float32)
    expected = _knn_reference(bank, labels, queries, 5, k, temperature)
    got = knn_predict(bank, labels, queries, 5, k=k, temperature=temperature, batch_size=16)
    np.testing.assert_array_equal(got, expected)
    # the evaluation caps k at the smallest class's count (here ~50 of 300), k=200 and 1000 included
    capped = _knn_reference(bank, labels, queries, 5, min(k, np.bincount(labels).min()), temperature)
    accuracy = knn_accuracy(bank, labels, queries, query_labels, 5, k=k, temperature=temperature)
    assert accuracy == pytest.approx(np.mean(capped == query_labels))


def test_knn_evaluation_caps_k_at_the_smallest_class_and_says_so():
    # Class 0: two train points at 0 and 10 degrees; class 1: six at 30..55 degrees; the query
    # (class 0) at 5 degrees. Cosines to it: class 0: cos 5 = 0.996 twice; class 1: cos 25 ..
    # cos 50 = 0.906, 0.866, 0.819, 0.766, 0.707, 0.643. With t=1 and all 8 neighbours class 1
    # outweighs class 0 (sum of e^cos: 13.2 against 5.4); capped at k=2 (class 0 has 2 points)
    # the two neighbours are class 0's.
    bank = np.array([_unit(a, 1.0) for a in (0, 10, 30, 35, 40, 45, 50, 55)], np.float32)
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    query = np.array([_unit(5, 1.0)], np.float32)
    assert _knn_reference(bank, labels, query, 2, 8, 1.0).tolist() == [1]
    assert _knn_reference(bank, labels, query, 2, 2, 1.0).tolist() == [0]
    assert knn_predict(bank, labels, query, 2, k=200, temperature=1.0).tolist() == [1]  # k as given
    from zoo.eval import knn_evaluate, knn_k
    report = knn_evaluate(bank, labels, query, [0], 2, k=200, temperature=1.0)
    assert report == {"top1": 1.0, "k": 2, "k_requested": 200, "smallest_class": 2, "temperature": 1.0}
    assert knn_accuracy(bank, labels, query, [0], 2, k=200, temperature=1.0) == 1.0
    assert knn_k(labels, k=1) == 1 and knn_k(labels, k=5) == 2
    assert knn_k([-1, -1, 3, 3, 3, 0, 0, 0, 0], k=200) == 3  # -1 (unlabelled) is no class; 1 and 2 absent
    with pytest.raises(ValueError, match="unlabelled"):
        knn_k([-1, -1], k=10)


# -------------------------------------------------------------------------- linear probe

def _probe_reference(x, y, num_classes, epochs, weight_decay):
    """The optimiser of zoo.eval.linear re-written in float64 numpy: standardise with the
    train statistics, Boehning-bound preconditioned steps, FISTA momentum, gradient restart."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / std
    n, d = x.shape
    onehot = np.eye(num_classes)[y]
    precond = np.linalg.inv(0.5 * x.T @ x / n + (weight_decay + 1e-6) * np.eye(d))

    def gradient(w, b):
        logits = x @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        residual = (p / p.sum(axis=1, keepdims=True) - onehot) / n
        return x.T @ residual + weight_decay * w, residual.sum(axis=0)

    w = w_prev = np.zeros((d, num_classes))
    b = b_prev = np.zeros(num_classes)
    t = 1.0
    for _ in range(epochs):
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        momentum, t = (t - 1) / t_next, t_next
        w_look, b_look = w + momentum * (w - w_prev), b + momentum * (b - b_prev)
        grad_w, grad_b = gradient(w_look, b_look)
        w_new, b_new = w_look - precond @ grad_w, b_look - 2 * grad_b
        if np.sum(grad_w * (w_new - w)) + np.sum(grad_b * (b_new - b)) > 0:
            t = 1.0
        w_prev, b_prev, w, b = w, b, w_new, b_new
    return w, b, mean, std


def _blobs(rng, n, d, num_classes, spread, centres=None):
    """Gaussian classes with correlated, unevenly scaled features (an ill-conditioned
    problem like real encoder features); returns (x, y, centres)."""
    centres = rng.normal(size=(num_classes, d)) if centres is None else centres
    y = rng.integers(0, num_classes, n)
    mix = np.linspace(0.1, 3.0, d) * (np.eye(d) + 0.5)  # correlated and scaled
    x = (centres[y] + spread * rng.normal(size=(n, d))) @ mix + 5.0
    return x.astype(np.float32), y, centres


def _standardised(x):
    return ((x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)).astype(np.float32)


def test_linear_probe_optimiser_matches_numpy(rng):
    x, y, centres = _blobs(rng, 600, 12, 4, spread=1.5)
    val_x, val_y, _ = _blobs(rng, 300, 12, 4, spread=1.5, centres=centres)
    w_ref, b_ref, mean, std = _probe_reference(x.astype(np.float64), y, 4, 25, 1e-3)
    w, b = linear_module._fit(_standardised(x), y, 4, epochs=25, learning_rate=1.0,
                              weight_decay=1e-3, batch_size=None)
    np.testing.assert_allclose(w, w_ref, atol=1e-4)
    np.testing.assert_allclose(b, b_ref, atol=1e-4)
    # Chunked gradient sums (batch_size) change memory, not the iterates.
    w_chunked, _ = linear_module._fit(_standardised(x), y, 4, epochs=25, learning_rate=1.0,
                                      weight_decay=1e-3, batch_size=64)
    np.testing.assert_allclose(w_chunked, w_ref, atol=1e-4)

    result = linear_probe(x, y, val_x, val_y, 4, epochs=25, weight_decay=1e-3)
    val_logits = ((val_x - mean) / std) @ w_ref + b_ref
    train_logits = ((x - mean) / std) @ w_ref + b_ref
    log_p = train_logits - np.log(np.exp(train_logits).sum(axis=1, keepdims=True))
    assert result["top1"] == pytest.approx(np.mean(val_logits.argmax(axis=1) == val_y))
    assert result["train_top1"] == pytest.approx(np.mean(train_logits.argmax(axis=1) == y))
    assert result["train_loss"] == pytest.approx(-np.mean(log_p[np.arange(len(y)), y]), rel=1e-4)
    assert "top5" not in result  # only reported for >= 10 classes
    assert result["epochs"] == 25 and result["weight_decay"] == 1e-3


def test_linear_probe_reaches_the_optimum(rng):
    # Independent of the optimiser: at the minimiser of mean CE + wd/2 |W|^2 the gradient
    # (computed here in numpy) vanishes. Ill-conditioned features, 60 iterations.
    x, y, _ = _blobs(rng, 800, 16, 5, spread=2.0)
    xs = _standardised(x).astype(np.float64)
    w, b = linear_module._fit(xs.astype(np.float32), y, 5, epochs=60, learning_rate=1.0,
                              weight_decay=1e-3, batch_size=None)
    logits = xs @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    residual = (p / p.sum(axis=1, keepdims=True) - np.eye(5)[y]) / len(y)
    assert np.abs(xs.T @ residual + 1e-3 * w).max() < 1e-4
    assert np.abs(residual.sum(axis=0)).max() < 1e-4
    assert np.abs(w).max() > 0.1  # not trivially zero


def test_linear_probe_separable_data(rng):
    x, y, centres = _blobs(rng, 3000, 32, 10, spread=0.15)
    val_x, val_y, _ = _blobs(rng, 1000, 32, 10, spread=0.15, centres=centres)
    result = linear_probe(x, y, val_x, val_y, 10)
    assert result["top1"] > 0.99 and result["train_top1"] > 0.99
    assert result["top5"] >= result["top1"]


def test_linear_probe_random_labels_are_at_chance(rng):
    # Val labels are independent of everything the probe sees, so its val top-1 is
    # Binomial(2000, 0.1) / 2000: 0.1 +- 0.0067; 0.035 is five standard deviations.
    x = rng.normal(size=(2000, 64)).astype(np.float32)
    val_x = rng.normal(size=(2000, 64)).astype(np.float32)
    result = linear_probe(x, rng.integers(0, 10, 2000), val_x, rng.integers(0, 10, 2000), 10)
    assert abs(result["top1"] - 0.1) < 0.035
    assert result["train_top1"] > 0.15  # it does fit (memorise) the train labels


def test_linear_probe_standardises_with_train_statistics(rng):
    # Train: x ~ N(0, 1), label = x > 0. Val: x ~ N(3, 1), the same rule, so nearly all
    # class 1. With the train mean the probe labels them correctly; standardising val with
    # its own mean would re-centre it at 0 and get about half wrong.
    x = rng.normal(size=(1000, 1)).astype(np.float32)
    val_x = (rng.normal(size=(500, 1)) + 3.0).astype(np.float32)
    result = linear_probe(x, (x[:, 0] > 0).astype(int), val_x, (val_x[:, 0] > 0).astype(int), 2)
    assert result["top1"] > 0.99


def test_linear_probe_is_invariant_to_feature_scale_and_offset(rng):
    x, y, centres = _blobs(rng, 500, 8, 3, spread=2.0)
    val_x, val_y, _ = _blobs(rng, 300, 8, 3, spread=2.0, centres=centres)
    scale = np.geomspace(1e-3, 1e3, 8).astype(np.float32)
    base = linear_probe(x, y, val_x, val_y, 3, epochs=30)
    moved = linear_probe(x * scale - 7, y, val_x * scale - 7, val_y, 3, epochs=30)
    assert moved["top1"] == pytest.approx(base["top1"], abs=1 / 300)
    assert moved["train_loss"] == pytest.approx(base["train_loss"], rel=1e-3)


def test_linear_probe_auto_weight_decay_ignores_val(rng):
    x, y, centres = _blobs(rng, 600, 8, 3, spread=3.0)
    val_x, val_y, _ = _blobs(rng, 200, 8, 3, spread=3.0, centres=centres)
    chosen = linear_probe(x, y, val_x, val_y, 3, epochs=20, weight_decay="auto")["weight_decay"]
    assert chosen in linear_module.WEIGHT_DECAY_GRID
    shuffled = linear_probe(x, y, val_x[::-1] * 10, rng.permutation(val_y), 3, epochs=20,
                            weight_decay="auto")
    assert shuffled["weight_decay"] == chosen


# ---------------------------------------------------------------------- feature extraction

def _encoder():
    """Conv + batch norm with non-trivial moving statistics, so that running it in training
    mode (batch statistics) would give different features."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    bn = model.layers[2]
    bn.moving_mean.assign(np.full(6, 0.3, np.float32))
    bn.moving_variance.assign(np.full(6, 4.0, np.float32))
    return model


def _images(rng, n):
    return rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def test_extract_features_matches_direct_call(rng, capsys):
    model, images = _encoder(), _images(rng, 37)
    expected = model(images.astype(np.float32) / 255, training=False).numpy()
    features = extract_features(model, images, batch_size=8)  # 37 = 4 * 8 + 5
    assert features.dtype == np.float32 and features.shape == (37, 6)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert "37/37" in capsys.readouterr().out  # progress bar when N > batch_size
    # Training mode (batch statistics) would differ; run last, as it updates the moving stats.
    assert not np.allclose(model(images.astype(np.float32) / 255, training=True), expected,
                           atol=1e-3)


def test_extract_features_preprocess_and_plain_callable(rng):
    images = _images(rng, 10)
    flat = extract_features(lambda x: x.reshape(len(x), -1)[:, :4], images, batch_size=3,
                            preprocess=lambda b: b.astype(np.float32) * 2 - 1, verbose=False)
    np.testing.assert_array_equal(flat, images.reshape(10, -1)[:, :4] * 2.0 - 1)


class _CountingEncoder:
    """Records how many batches it encodes; raises once `frozen` is set."""

    def __init__(self):
        self.calls, self.frozen = 0, False

    def __call__(self, x):
        if self.frozen:
            raise AssertionError("encoder called although the cache should have been used")
        self.calls += 1
        return x.reshape(len(x), -1)[:, :5] * 3.0


def test_extract_features_cache(rng, tmp_path):
    images, path = _images(rng, 20), str(tmp_path / "sub" / "features.npz")
    encoder = _CountingEncoder()
    first = extract_features(encoder, images, batch_size=8, cache_path=path, cache_key="w1")
    assert encoder.calls == 3 and os.path.exists(path)
    assert os.listdir(tmp_path / "sub") == ["features.npz"]  # no temporary file left behind

    encoder.frozen = True
    hit = extract_features(encoder, images.copy(), batch_size=8, cache_path=path,
                           cache_key="w1")
    np.testing.assert_array_equal(hit, first)
    assert hit.dtype == np.float32

    encoder.frozen = False
    for changed_images, key in [(images, "w2"), (images[::-1], "w1"), (images[:19], "w1"),
                                (_images(rng, 20), "w1")]:
        extract_features(encoder, images, cache_path=path, cache_key="w1")  # the base cache
        encoder.calls = 0
        out = extract_features(encoder, changed_images, batch_size=8, cache_path=path,
                               cache_key=key)
        assert encoder.calls > 0  # recomputed, and the new result is what is cached
        expected = changed_images.reshape(len(out), -1)[:, :5].astype(np.float32) / 255 * 3
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_extract_features_of_a_model_built_under_mirrored_strategy(two_device_strategy):
    """predict_on_batch of such a model returns each replica's copy of the batch; the
    features must still have one row per image and match a direct call."""
    import keras
    with two_device_strategy.scope():
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs)))
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    features = extract_features(model, images, batch_size=4, verbose=False)
    assert features.shape == (10, 4)
    np.testing.assert_allclose(features, model(images.astype(np.float32) / 255.0).numpy(), rtol=1e-5, atol=1e-6)


def test_layer_encoder_pools_the_named_block(rng, tmp_path):
    import zoo
    from zoo.backbones import feature_maps
    from zoo.encoder import layer_encoder
    encoder = zoo.load("rotation_resnet18w025_cifar10")
    images = rng.integers(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    maps = feature_maps(encoder.backbone, ["stage2"])(images.astype(np.float32) / 255.0)
    expected = np.asarray(maps).mean(axis=(1, 2))
    got = layer_encoder(encoder, "stage2_out")(images).numpy()
    assert got.shape == (3, expected.shape[-1]) and expected.shape[-1] != encoder.feature_dim
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer_encoder(encoder, "stage4")(images).numpy(), encoder(images).numpy(),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stage5"):
        layer_encoder(encoder, "stage5")


def test_zoo_eval_layer_writes_a_per_layer_report(tmp_path):
    from trainers.evaluate import evaluate
    report = evaluate("rotation_resnet18w025_cifar10", data="shapes?n=400", protocols=["knn"], layer="stage2",
                      verbose=False)
    assert report["layer"] == "stage2" and report["feature_dim"] == 32
    assert 0.0 <= report["knn"]["top1"] <= 1.0
