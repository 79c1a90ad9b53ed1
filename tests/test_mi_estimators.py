"""Mutual-information estimators (zoo.losses: JSD, DV, InfoNCE; DIM / AMDIM) and CPC against
independent references: plain-numpy loops written from the papers' formulas (DIM eqs. 2 and 4,
AMDIM's NCE with tanh clipping as in its reference code, CPC's InfoNCE over positions and
images), hand-computed and closed-form cases, finite differences, and CPC's causal masking
checked by perturbing patches."""
import math

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import losses
from zoo.losses import cpc_logits, global_local_scores
from zoo.methods.cpc import context_network, from_frame, to_frame
from numerics import central_differences


def _softplus(x):
    return np.logaddexp(0.0, x)


def _rows(scores, positive):
    for s, p in zip(np.asarray(scores, np.float64), np.asarray(positive, bool)):
        yield s[p], s[~p]


def _np_jsd(scores, positive):
    return np.mean([np.mean(-_softplus(-pos)) - np.mean(_softplus(neg)) for pos, neg in _rows(scores, positive)])


def _np_dv(scores, positive):
    return np.mean([np.mean(pos) - math.log(np.mean(np.exp(neg))) for pos, neg in _rows(scores, positive)])


def _np_infonce_loss(scores, positive):
    per_row = []
    for pos, neg in _rows(scores, positive):
        per_row.append(np.mean([-(p - math.log(math.exp(p) + np.sum(np.exp(neg)))) for p in pos]))
    return np.mean(per_row)


def _np_infonce(scores, positive):
    return np.mean([math.log(1 + len(neg)) + np.mean([p - math.log(math.exp(p) + np.sum(np.exp(neg))) for p in pos])
                    for pos, neg in _rows(scores, positive)])


NUMPY = {"jsd": _np_jsd, "dv": _np_dv, "infonce": _np_infonce}


def _random_case(rng, n, m, scale=2.0):
    scores = rng.normal(scale=scale, size=(n, m)).astype(np.float32)
    positive = rng.uniform(size=(n, m)) < 0.3
    positive[:, 0], positive[:, 1] = True, False  # every row: a positive and a negative
    return scores, positive


HAND = (np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]], np.float32),
        np.array([[True, False, False], [False, True, True]]))


@pytest.mark.parametrize("name", ["jsd", "dv", "infonce"])
def test_estimators_match_numpy_on_a_hand_made_matrix(name):
    scores, positive = HAND
    np.testing.assert_allclose(float(losses.MI_ESTIMATORS[name](scores, positive)), NUMPY[name](scores, positive),
                               rtol=1e-5, atol=1e-6)


def test_hand_made_matrix_by_hand():
    # Row 0: positive 2, negatives -1, 0.5; row 1: positives 1, -3, negative 0.
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    jsd = 0.5 * ((-sp(-2.0) - (sp(-1.0) + sp(0.5)) / 2) + (-(sp(-1.0) + sp(3.0)) / 2 - sp(0.0)))
    dv = 0.5 * ((2.0 - math.log((math.exp(-1.0) + math.exp(0.5)) / 2)) + ((1.0 - 3.0) / 2 - 0.0))
    ce0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)))
    ce1 = 0.5 * (-math.log(math.exp(1.0) / (math.exp(1.0) + 1.0)) - math.log(math.exp(-3.0) / (math.exp(-3.0) + 1.0)))
    scores, positive = HAND
    assert float(losses.mi_jsd(scores, positive)) == pytest.approx(jsd, rel=1e-5)
    assert float(losses.mi_dv(scores, positive)) == pytest.approx(dv, rel=1e-5)
    assert float(losses.infonce_loss(scores, positive)) == pytest.approx(0.5 * (ce0 + ce1), rel=1e-5)
    infonce = 0.5 * ((math.log(3) - ce0) + (math.log(2) - ce1))
    assert float(losses.mi_infonce(scores, positive)) == pytest.approx(infonce, rel=1e-5)


@pytest.mark.parametrize("name", ["jsd", "dv", "infonce"])
@pytest.mark.parametrize("n, m", [(1, 2), (3, 7), (8, 40), (5, 128)])
def test_estimators_match_numpy_on_random_matrices(rng, name, n, m):
    scores, positive = _random_case(rng, n, m)
    np.testing.assert_allclose(float(losses.MI_ESTIMATORS[name](scores, positive)), NUMPY[name](scores, positive),
                               rtol=1e-5, atol=1e-5)
    # The loss to minimise: -estimate for JSD and DV, the cross-entropy for InfoNCE.
    expected_loss = _np_infonce_loss(scores, positive) if name == "infonce" else -NUMPY[name](scores, positive)
    np.testing.assert_allclose(float(losses.mi_loss(scores, positive, name)), expected_loss, rtol=1e-5, atol=1e-5)


def test_closed_forms():
    n, m = 4, 9
    positive = np.zeros((n, m), bool)
    positive[np.arange(n), np.arange(n)] = True  # one positive, 8 negatives per row
    # All scores equal to c: JSD = -softplus(-c) - softplus(c) (-2 log 2 at 0), DV = 0, InfoNCE = 0.
    for c in (0.0, 1.5, -2.0):
        flat = np.full((n, m), c, np.float32)
        assert float(losses.mi_jsd(flat, positive)) == pytest.approx(-_softplus(-c) - _softplus(c), rel=1e-6)
        assert float(losses.mi_dv(flat, positive)) == pytest.approx(0.0, abs=1e-5)
        assert float(losses.mi_infonce(flat, positive)) == pytest.approx(0.0, abs=1e-5)
        assert float(losses.infonce_loss(flat, positive)) == pytest.approx(math.log(m), rel=1e-6)
    assert float(losses.mi_jsd(np.zeros((n, m), np.float32), positive)) == pytest.approx(-2 * math.log(2), rel=1e-6)
    # Perfectly separated (+a positives, -a negatives): JSD -> 0 (its supremum), DV = 2a,
    # InfoNCE -> log(1 + 8) (its bound) with the cross-entropy -> 0.
    for a in (5.0, 20.0):
        sep = np.where(positive, a, -a).astype(np.float32)
        assert float(losses.mi_jsd(sep, positive)) == pytest.approx(-2 * _softplus(-a), rel=1e-4, abs=1e-12)
        assert float(losses.mi_dv(sep, positive)) == pytest.approx(2 * a, rel=1e-6)
        expected = math.log(m) - math.log1p((m - 1) * math.exp(-2 * a))
        assert float(losses.mi_infonce(sep, positive)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.mi_jsd(np.where(positive, 20.0, -20.0), positive)) > -1e-8
    assert float(losses.mi_infonce(np.where(positive, 20.0, -20.0), positive)) == pytest.approx(math.log(m), rel=1e-6)


def test_other_positives_are_not_negatives_in_infonce():
    # Positives 1 and 0 (columns 0, 2), negatives 1 and 0 (columns 1, 3): each positive competes
    # with the negatives only, -log e / (e + e + 1) and -log 1 / (1 + e + 1).
    e = math.e
    scores = np.array([[1.0, 1.0, 0.0, 0.0]], np.float32)
    positive = np.array([[True, False, True, False]])
    first, second = -math.log(e / (2 * e + 1)), -math.log(1 / (e + 2))
    assert float(losses.infonce_loss(scores, positive)) == pytest.approx(0.5 * (first + second), rel=1e-6)
    # Raising the second positive to 3 changes only its own term.
    raised = float(losses.infonce_loss(scores + [[0, 0, 3.0, 0]], positive))
    assert raised == pytest.approx(0.5 * (first - math.log(e ** 3 / (e ** 3 + e + 1))), rel=1e-6)
    # Raising a negative hurts both.
    assert float(losses.infonce_loss(scores + [[0, 3.0, 0, 0]], positive)) > 0.5 * (first + second) + 1.0


def test_dv_gradient_matches_finite_differences(rng):
    scores, positive = _random_case(rng, 3, 6, scale=1.0)
    x = tf.Variable(scores.astype(np.float64))
    with tf.GradientTape() as tape:
        value = losses.mi_dv(tf.cast(x, tf.float32), positive)
    grad = tape.gradient(value, x).numpy()
    numeric = central_differences(lambda s: _np_dv(s, positive), scores, eps=1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_mi_loss_rejects_an_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        losses.mi_loss(*HAND, estimator="nwj")


@pytest.mark.parametrize("anchors, images, per_image, offset", [(2, 2, 3, 0), (2, 4, 3, 2), (3, 3, 1, 0)])
def test_same_image_mask(anchors, images, per_image, offset):
    expected = np.array([[m // per_image == i + offset for m in range(images * per_image)] for i in range(anchors)])
    np.testing.assert_array_equal(losses.same_image_mask(anchors, images, per_image, offset).numpy(), expected)


def test_tanh_clip_matches_numpy(rng):
    x = rng.normal(scale=30.0, size=(50,)).astype(np.float32)
    for clip in (10.0, 2.5):
        got = losses.tanh_clip(x, clip).numpy()
        np.testing.assert_allclose(got, clip * np.tanh(x / clip), rtol=1e-6, atol=1e-6)
        assert np.all(np.abs(got) <= clip) and np.any(np.abs(got) > 0.9 * clip)  # float32 tanh saturates
    small = np.array([1e-3, -2e-3], np.float32)
    np.testing.assert_allclose(losses.tanh_clip(small, 10.0).numpy(), small, rtol=1e-5)  # ~identity near 0
    np.testing.assert_array_equal(np.asarray(losses.tanh_clip(x, None)), x)
    np.testing.assert_array_equal(np.asarray(losses.tanh_clip(x, 0)), x)


def _np_amdim_nce(r_src, r_trg, tclip):
    """AMDIM's loss_xent (reference code, costs.py) in numpy: r_src [B, E], r_trg [B, L, E];
    raw = scores / sqrt(E), lgt_reg = mean(raw^2), tanh clip, then for each (i, l) the positive
    score against every score of source i with the other images' locations (mask_neg)."""
    b, n_loc, e = r_trg.shape
    raw = np.einsum("ie,jle->ijl", r_src, r_trg).astype(np.float64) / math.sqrt(e)
    lgt_reg = np.mean(raw ** 2)
    raw = tclip * np.tanh(raw / tclip)
    mask_pos = np.eye(b)[:, :, None] * np.ones((1, 1, n_loc))
    mask_neg = 1.0 - mask_pos
    pos_scores = (mask_pos * raw).sum(axis=1)  # [B, L]
    neg_scores = ((mask_neg * raw) - (tclip * mask_pos)).reshape(b, -1)
    mask_neg = mask_neg.reshape(b, -1)
    neg_maxes = neg_scores.max(axis=1, keepdims=True)
    neg_sumexp = (mask_neg * np.exp(neg_scores - neg_maxes)).sum(axis=1, keepdims=True)
    all_logsumexp = np.log(np.exp(pos_scores - neg_maxes) + neg_sumexp)
    nce = -np.mean(pos_scores - neg_maxes - all_logsumexp)
    return nce, lgt_reg


@pytest.mark.parametrize("tclip, scale", [(10.0, 1.0), (10.0, 8.0), (2.0, 3.0)])
def test_amdim_nce_matches_the_reference_code(rng, tclip, scale):
    r_src = rng.normal(scale=scale, size=(4, 8)).astype(np.float32)
    r_trg = rng.normal(scale=scale, size=(4, 5, 8)).astype(np.float32)
    method = zoo.create("amdim", width=0.125, tclip=tclip)
    nce, reg = method._nce(tf.constant(r_src), tf.constant(r_trg))
    ref_nce, ref_reg = _np_amdim_nce(r_src, r_trg, tclip)
    np.testing.assert_allclose(float(nce), ref_nce, rtol=1e-5)
    np.testing.assert_allclose(float(reg), ref_reg, rtol=1e-5)


def _np_fenchel_dual_jsd(l, m):
    """DIM's reference fenchel_dual_loss(measure="JSD") without its constants: over ALL pairs (i, j)
    of an image's global m_i and image j's locals, mean over positions; positives i == j."""
    n = l.shape[0]
    u = np.einsum("ie,jpe->ijp", m, l).astype(np.float64)
    e_pos = (-_softplus(-u)).mean(2)
    e_neg = _softplus(u).mean(2)
    mask = np.eye(n)
    return (e_pos * mask).sum() / mask.sum() - (e_neg * (1 - mask)).sum() / (1 - mask).sum()


def test_dim_local_scores_and_jsd_match_the_reference_form(rng):
    g = rng.normal(size=(5, 6)).astype(np.float32)
    local = rng.normal(size=(5, 4, 6)).astype(np.float32)
    scores, positive, raw = global_local_scores(g, local, scale=1.0)
    expected = np.einsum("ie,jpe->ijp", g, local).reshape(5, 20)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(positive.numpy(), np.repeat(np.eye(5, dtype=bool), 4, axis=1))
    np.testing.assert_allclose(float(losses.mi_jsd(scores, positive)), _np_fenchel_dual_jsd(local, g), rtol=1e-5)
    default, _, _ = global_local_scores(g, local)  # default scale sqrt(E)
    np.testing.assert_allclose(default.numpy(), expected / math.sqrt(6), rtol=1e-5, atol=1e-5)


# ---- CPC ----------------------------------------------------------------------------------

def _cpc(**overrides):
    import keras
    keras.utils.set_random_seed(3)
    return zoo.create("cpc", **{"width": 0.125, **overrides})


def _views(method, n=4, seed=(1, 2)):
    images = zoo.data.load_arrays("shapes", "train").images[:n]
    return method.make_views(tf.constant(images), tf.zeros([n], tf.int32), tf.constant(seed))


def _perturb(z, rows=None, cols=None, rng=None):
    z = z.copy()
    idx = (slice(None), rows if rows is not None else slice(None), cols if cols is not None else slice(None))
    z[idx] += rng.normal(scale=3.0, size=z[idx].shape)
    return z


@pytest.mark.parametrize("t", [0, 3, 6])
def test_cpc_context_sees_only_rows_up_to_t(rng, t):
    method = _cpc(directions=("down", "up", "right", "left"))
    z = method.encode_grid(_views(method)["patches"], training=False).numpy()
    g = z.shape[1]
    # For each direction: the slice at index t, and the "future" of t in that direction.
    future = {"down": dict(rows=slice(t + 1, None)), "up": dict(rows=slice(0, t)),
              "right": dict(cols=slice(t + 1, None)), "left": dict(cols=slice(0, t))}
    present = {"down": dict(rows=slice(t, t + 1)), "up": dict(rows=slice(t, t + 1)),
               "right": dict(cols=slice(t, t + 1)), "left": dict(cols=slice(t, t + 1))}
    for d in method.directions:
        at_t = (slice(None), t) if d in ("down", "up") else (slice(None), slice(None), t)
        base = method.context(tf.constant(z), d).numpy()
        if (d in ("down", "right") and t < g - 1) or (d in ("up", "left") and t > 0):
            moved = method.context(tf.constant(_perturb(z, rng=rng, **future[d])), d).numpy()
            np.testing.assert_allclose(moved[at_t], base[at_t], atol=1e-5, err_msg=d)
            assert np.abs(moved - base).max() > 1e-2, d  # the perturbation did reach later contexts
        changed = method.context(tf.constant(_perturb(z, rng=rng, **present[d])), d).numpy()
        assert np.abs(changed[at_t] - base[at_t]).max() > 1e-2, d


def test_cpc_context_of_the_last_row_sees_the_first_row(rng):
    # 3 blocks of causal 3x3 convolutions reach 6 rows up (the whole 7 x 7 grid) and 3 columns
    # to each side: (6, 6) sees (0, 3) but not (0, 2).
    method = _cpc(directions=("down",))
    z = method.encode_grid(_views(method)["patches"], training=False).numpy()
    base = method.context(tf.constant(z), "down").numpy()
    # (The path through all three blocks is weak at initialisation: ~1e-4 for a perturbation of 3.)
    moved = method.context(tf.constant(_perturb(z, rows=slice(0, 1), cols=slice(3, 4), rng=rng)), "down").numpy()
    assert np.abs(moved[:, 6, 6] - base[:, 6, 6]).max() > 2e-5
    moved = method.context(tf.constant(_perturb(z, rows=slice(0, 1), cols=slice(2, 3), rng=rng)), "down").numpy()
    np.testing.assert_allclose(moved[:, 6, 6], base[:, 6, 6], atol=1e-7)


@pytest.mark.parametrize("norm, training", [("layer", True), ("layer", False), ("none", True), ("batch", False)])
def test_context_network_is_causal_in_isolation(rng, norm, training):
    net = context_network(5, 6, 8, blocks=2, kernel=3, norm=norm)
    z = rng.normal(size=(3, 5, 5, 6)).astype(np.float32)
    base = net(z, training=training).numpy()
    for t in range(4):
        moved = net(_perturb(z, rows=slice(t + 1, None), rng=rng), training=training).numpy()
        np.testing.assert_allclose(moved[:, :t + 1], base[:, :t + 1], atol=1e-5)
        assert np.abs(moved[:, t + 1:] - base[:, t + 1:]).max() > 1e-2


def test_batch_norm_in_training_mode_leaks_the_future(rng):
    """Why norm="layer" (v2) is the default: BN's batch statistics mix future rows into the past."""
    net = context_network(5, 6, 8, blocks=1, kernel=3, norm="batch")
    z = rng.normal(size=(3, 5, 5, 6)).astype(np.float32)
    base = net(z, training=True).numpy()
    moved = net(_perturb(z, rows=slice(4, None), rng=rng), training=True).numpy()
    assert np.abs(moved[:, 0] - base[:, 0]).max() > 1e-4


def test_frames_round_trip(rng):
    x = tf.constant(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
    for d in ("down", "up", "right", "left"):
        np.testing.assert_array_equal(from_frame(to_frame(x, d), d).numpy(), x.numpy())
    # "left" predicts leftwards: frame row 0 is the image's last column.
    np.testing.assert_array_equal(to_frame(x, "left").numpy()[:, 0], x.numpy()[:, :, 3])
    np.testing.assert_array_equal(to_frame(x, "up").numpy()[:, 0], x.numpy()[:, 3])
    np.testing.assert_array_equal(to_frame(x, "right").numpy()[:, 1], x.numpy()[:, :, 1])


def _np_cpc_loss(pred, z_all, k, offset, negatives):
    """Mean over (b, t, col) of -log softmax of the true patch z[b, t+k, col] among the candidates:
    "position": the image's G*G patches + the patch at (t+k, col) of every other image;
    "all": every patch of every image. pred [B, G-k, G, D], z_all [B_g, G, G, D]."""
    b_local, rows, g, _ = pred.shape
    total, count = 0.0, 0
    for b in range(b_local):
        img = b + offset
        for t in range(rows):
            for col in range(g):
                p = pred[b, t, col].astype(np.float64)
                positive = p @ z_all[img, t + k, col]
                if negatives == "position":
                    cands = [z_all[img, r, c] for r in range(g) for c in range(g)]
                    cands += [z_all[n, t + k, col] for n in range(len(z_all)) if n != img]
                else:
                    cands = [z_all[n, r, c] for n in range(len(z_all)) for r in range(g) for c in range(g)]
                scores = np.array([p @ v for v in cands], np.float64)
                total += -(positive - (scores.max() + math.log(np.sum(np.exp(scores - scores.max())))))
                count += 1
    return total / count


@pytest.mark.parametrize("negatives", ["position", "all"])
@pytest.mark.parametrize("k, offset", [(1, 0), (2, 0), (1, 2)])
def test_cpc_infonce_matches_a_numpy_loop(rng, negatives, k, offset):
    g, d, b = 3, 4, 2
    z_all = rng.normal(size=(4, g, g, d)).astype(np.float32)  # a global batch of 4; this replica: offset..
    z = z_all[offset:offset + b]
    pred = rng.normal(size=(b, g - k, g, d)).astype(np.float32)
    logits, labels = cpc_logits(tf.constant(pred), tf.constant(z), tf.constant(z_all), k, offset, negatives)
    got = float(losses.cross_entropy(labels, logits))
    np.testing.assert_allclose(got, _np_cpc_loss(pred, z_all, k, offset, negatives), rtol=1e-5)
    width = g * g + len(z_all) if negatives == "position" else len(z_all) * g * g
    assert logits.shape == (b, g - k, g, width)


def _np_frame(x, d):
    if d == "down":
        return x
    if d == "up":
        return x[:, ::-1]
    if d == "right":
        return np.transpose(x, (0, 2, 1, 3))
    return np.transpose(x, (0, 2, 1, 3))[:, ::-1]


@pytest.mark.parametrize("negatives", ["position", "all"])
def test_cpc_loss_end_to_end_on_a_tiny_grid(negatives):
    # 16 px images, 8 px patches, stride 4: a 3 x 3 grid; 2 steps; all four directions.
    method = _cpc(image_size=16, patch_fraction=0.5, stride_fraction=0.25, steps=2,
                  directions=("down", "up", "right", "left"), negatives=negatives)
    views = _views(method, n=3)
    assert views["patches"].shape == (3, 9, 8, 8, 3)
    z = method.encode_grid(views["patches"], training=False).numpy()
    expected = []
    for d in method.directions:
        zf = np.ascontiguousarray(_np_frame(z, d))
        pred = method.predictors[d](method.context_nets[d](zf, training=False)).numpy()  # [B, G, G, K, D]
        pred = pred / math.sqrt(z.shape[-1])  # the default logit scale 1 / sqrt(D)
        for k in (1, 2):
            expected.append(_np_cpc_loss(pred[:, :3 - k, :, k - 1], zf, k, 0, negatives))
    loss, metrics = method.pretext_loss(views, training=False)
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-4)
    assert 0.0 <= float(metrics["cpc_accuracy"]) <= 1.0


def test_cpc_patches_are_the_image_grid():
    # No augmentation: patch r*G + c is exactly the pixels at (offset + r*stride, offset + c*stride).
    method = _cpc(flip=False, crop_padding=0, patch_flip_p=0.0, patch_jitter_p=0.0, patch_grayscale_p=0.0,
                  patch_fraction=0.25, stride_fraction=0.1875)  # 8 px patches, 6 px stride: 5 x 5, offset 0
    images = zoo.data.load_arrays("shapes", "train").images[:2]
    stack = method.make_views(tf.constant(images), tf.zeros([2], tf.int32), tf.constant([0, 0]))["patches"].numpy()
    geo = method.geometry
    assert (geo.grid, geo.offset) == (5, 0) and stack.shape == (2, 25, 8, 8, 3)
    x = images.astype(np.float32) / 255.0
    for r in range(5):
        for c in range(5):
            np.testing.assert_allclose(stack[:, r * 5 + c], x[:, 6 * r:6 * r + 8, 6 * c:6 * c + 8], atol=1e-6)


def test_cpc_view_panels_show_the_grid():
    method = _cpc()
    views = _views(method, n=2)
    (cap_grid, grid), (_, pasted) = method.view_panels(views, 1)
    assert "7x7" in cap_grid and grid.shape == (7 * 8 + 6, 7 * 8 + 6, 3) and pasted.shape == (32, 32, 3)
    np.testing.assert_allclose(grid[9:17, 18:26], views["patches"][1, 1 * 7 + 2].numpy(), atol=1e-6)


def test_cpc_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        _cpc(steps=7)
    with pytest.raises(ValueError, match="directions"):
        _cpc(directions=("diagonal",))
    with pytest.raises(ValueError, match="norm"):
        _cpc(norm="group")


# Default configs lower to XLA in the harness (test_methods); compiling and running them here is slow.
@pytest.mark.parametrize("name, overrides", [pytest.param("cpc", {}, marks=pytest.mark.slow),
                                             ("cpc", {"negatives": "all", "norm": "batch"}),
                                             ("dim", {"mode": "both", "estimator": "jsd"}),
                                             pytest.param("amdim", {}, marks=pytest.mark.slow)])
def test_pretext_loss_traces_under_xla(name, overrides):
    """XLA-compiled and eager losses agree, for configurations the harness does not build."""
    import keras
    keras.utils.set_random_seed(0)
    method = zoo.create(name, width=0.125, **overrides)
    views = _views(method)
    eager = float(method.pretext_loss(views, training=False)[0])
    compiled = tf.function(lambda v: method.pretext_loss(v, training=False)[0], jit_compile=True)
    np.testing.assert_allclose(float(compiled(views)), eager, rtol=1e-4)


def test_dim_local_map_is_the_stage_map_averaged_over_blocks(rng):
    import keras
    keras.utils.set_random_seed(0)
    method = zoo.create("dim", width=0.125, local_layer="stage1", local_pool=4)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    local_map, pooled = method.local_and_global(images)
    stage1, y = (np.asarray(t) for t in method.stage_maps(images))
    assert stage1.shape[1:3] == (32, 32) and local_map.shape[1:3] == (8, 8)
    blocks = stage1.reshape(2, 8, 4, 8, 4, stage1.shape[-1]).mean(axis=(2, 4))  # 4 x 4 blocks
    np.testing.assert_allclose(np.asarray(local_map), blocks, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled), y, rtol=1e-6)
    with pytest.raises(ValueError, match="local_pool=3"):
        zoo.create("dim", width=0.125, local_pool=3)


@pytest.mark.parametrize("mode, metrics", [("local", {"local_mi"}), ("global", {"global_mi"}),
                                           ("both", {"local_mi", "global_mi"})])
def test_dim_modes_and_weights(mode, metrics):
    import keras
    keras.utils.set_random_seed(0)
    method = zoo.create("dim", width=0.125, mode=mode, estimator="dv", alpha=0.25, beta=2.0)
    views = _views(method)
    loss, got = method.pretext_loss(views, training=False)
    assert set(got) == metrics == set(method.metric_names)
    weights = {"local": {"local_mi": 1.0}, "global": {"global_mi": 1.0},
               "both": {"local_mi": 2.0, "global_mi": 0.25}}[mode]
    # DV: the loss is minus the weighted estimates.
    np.testing.assert_allclose(float(loss), -sum(w * float(got[k]) for k, w in weights.items()), rtol=1e-5)
