"""The ViT backbone and MAE against independent references: parameter counts from the layer
sizes by hand, tied to timm's published totals (ViT-Ti/16 5,717,416, ViT-S/16 22,050,664,
ViT-B/16 86,567,656 with class token, learned positions and the 1000-class head); the sin-cos
position embedding and the patch embedding against numpy; patchify against a numpy loop; the
masking (exact ratio, permutations, which tokens the encoder sees) against numpy gathers and
pixel edits; the per-patch normalisation and the masked loss against numpy and a hand-computed
case. The shared harness (tests/test_methods.py) runs MAE's steps once it builds MAE on a ViT."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.backbones import build_backbone
from zoo.backbones import vit
from zoo.encoder import ImageEncoder
from zoo.hub import build_encoder
from zoo.methods.mae import MAEDecoder, masked_patch_loss, normalize_patches, num_visible
from zoo.registry import get_method
from selection import slow_except

TINY_VIT = dict(backbone="vit_tiny", width=0.125, image_size=32)  # dim 24, 3 heads, 12 blocks, patch 4
BATCH = 8


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _by_hand(dim, patch, depth=12):
    """Weights of a ViT without class token, learned positions or head: patch embedding
    (3 p^2 D + D), per block 2 LayerNorms (2 x 2D), q, k, v, out (4 x (D^2 + D)), MLP
    (D x 4D + 4D, 4D x D + D), and the final LayerNorm (2D)."""
    block = 2 * 2 * dim + 4 * (dim * dim + dim) + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
    return 3 * patch * patch * dim + dim + depth * block + 2 * dim


def _timm_extras(dim, tokens=197, classes=1000):
    """What timm's published counts add: class token, learned positions (197 x D), classifier."""
    return dim + tokens * dim + dim * classes + classes


def test_reference_numbers():
    assert _by_hand(192, 16) + _timm_extras(192) == 5_717_416     # timm vit_tiny_patch16_224
    assert _by_hand(384, 16) + _timm_extras(384) == 22_050_664    # timm vit_small_patch16_224
    assert _by_hand(768, 16) + _timm_extras(768) == 86_567_656    # timm vit_base_patch16_224


@pytest.mark.parametrize("name,dim,patch", [
    ("vit_tiny", 192, 4), ("vit_tiny16", 192, 16), ("vit_small16", 384, 16),
    pytest.param("vit_base16", 768, 16, marks=pytest.mark.slow)])
def test_parameter_counts(name, dim, patch):
    size = 32 if patch == 4 else 224
    model = build_backbone(name, image_size=size)
    assert _trainable(model) == _by_hand(dim, patch)
    assert model.output.shape == (None, dim)


def test_width_scales_the_embedding_dimension():
    model = build_backbone("vit_tiny", width=0.125, image_size=32)
    assert model.output.shape == (None, 24)  # 192 / 8, a multiple of 4 and of the 3 heads
    assert _trainable(model) == _by_hand(24, 4)
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        build_backbone("vit_tiny", image_size=30)


@pytest.fixture(scope="module")
def tiny_vit():
    keras.utils.set_random_seed(0)
    return build_backbone("vit_tiny", width=0.125, image_size=32)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)


def test_output_and_block_shapes(tiny_vit, images):
    assert tuple(tiny_vit(images).shape) == (2, 24)
    assert vit.block_names(tiny_vit) == [f"block{i}" for i in range(1, 13)]
    blocks = keras.Model(tiny_vit.input, [tiny_vit.get_layer("block1_out").output,
                                          tiny_vit.get_layer("block12_out").output])
    assert [tuple(b.shape) for b in blocks(images)] == [(2, 64, 24), (2, 64, 24)]
    # Any multiple of the patch: 48 px -> 12 x 12 = 144 tokens, the same weights.
    assert tuple(vit.embed_patches(tiny_vit, np.zeros((1, 48, 48, 3), np.float32)).shape) == (1, 144, 24)


def _numpy_sincos(height, width, dim):
    """MAE's get_2d_sincos_pos_embed, written again in numpy: first half the column, second the row."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")

    def encode(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    return np.concatenate([encode(cols), encode(rows)], axis=1)


def test_sincos_position_embedding_matches_numpy():
    got = vit.sincos_position_embedding(3, 5, 8).numpy()
    np.testing.assert_allclose(got, _numpy_sincos(3, 5, 8), atol=1e-6)
    # Hand-checked entries: token 0 is (row 0, col 0): sin 0 = 0, cos 0 = 1.
    np.testing.assert_array_equal(got[0], [0, 0, 1, 1, 0, 0, 1, 1])
    # Token 6 is (row 1, col 1): sin(1), sin(1e-2), cos(1), cos(1e-2) for each half.
    np.testing.assert_allclose(got[6, :4], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)], atol=1e-6)


def _numpy_patchify(images, p):
    n, h, w, c = images.shape
    out = np.zeros((n, (h // p) * (w // p), p * p * c), images.dtype)
    for i in range(h // p):
        for j in range(w // p):
            out[:, i * (w // p) + j] = images[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :].reshape(n, -1)
    return out


def test_patchify_matches_a_numpy_loop_and_unpatchify_inverts_it():
    x = np.random.default_rng(1).uniform(size=(2, 12, 8, 3)).astype(np.float32)
    patches = vit.patchify(tf.constant(x), 4).numpy()
    np.testing.assert_array_equal(patches, _numpy_patchify(x, 4))
    np.testing.assert_array_equal(vit.unpatchify(tf.constant(patches), 4, 12, 8).numpy(), x)


def test_patch_tokens_are_a_linear_map_of_patchify_plus_positions(tiny_vit, images):
    """The token order of the backbone is patchify's order (MAE's targets rely on it)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    kernel, bias = (w.numpy() for w in tiny_vit.get_layer("patch_embed").weights)  # kernel [4, 4, 3, 24]
    patches = _numpy_patchify(((images - mean) / std).astype(np.float32), 4)
    expected = patches @ kernel.reshape(-1, 24) + bias + _numpy_sincos(8, 8, 24)
    np.testing.assert_allclose(vit.embed_patches(tiny_vit, images).numpy(), expected, atol=1e-4)


def test_tokens_in_give_the_full_image_features_when_nothing_is_masked(tiny_vit, images):
    tokens = vit.embed_patches(tiny_vit, images)
    pooled = vit.pool_tokens(tiny_vit, vit.encode_tokens(tiny_vit, tokens))
    np.testing.assert_allclose(pooled.numpy(), tiny_vit(images).numpy(), atol=1e-6)
    # Mean pooling: the features are the mean of the normalised tokens.
    np.testing.assert_allclose(tiny_vit(images).numpy(), vit.encode_tokens(tiny_vit, tokens).numpy().mean(1),
                               atol=1e-6)


def test_image_encoder_with_a_vit_reloads_from_its_config_in_safe_mode(tiny_vit, images):
    """What model.save / load_model of a fine-tuned ViT encoder rely on: registered layers only."""
    encoder = ImageEncoder(tiny_vit, 32)
    config = keras.saving.serialize_keras_object(encoder)
    loaded = keras.saving.deserialize_keras_object(config, safe_mode=True)
    loaded.set_weights(encoder.get_weights())
    np.testing.assert_allclose(loaded(images * 255).numpy(), encoder(images * 255).numpy(), atol=1e-6)


# ---- MAE ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mae():
    keras.utils.set_random_seed(0)
    return zoo.create("mae", **TINY_VIT)


@pytest.fixture(scope="module")
def views(mae):
    data = zoo.data.load_arrays("shapes", "train")
    return mae.make_views(tf.constant(data.images[:BATCH]), tf.constant(data.labels[:BATCH]), tf.constant([3, 4]))


def test_mae_needs_a_vit():
    with pytest.raises(ValueError, match="mae: backbone 'resnet18' is not a ViT"):
        zoo.create("mae", backbone="resnet18", width=0.125)
    assert get_method("mae").Config().backbone == "vit_tiny"


def test_masking_ratio_is_exact_and_every_order_is_a_permutation(mae, views):
    assert (num_visible(64, 0.75), num_visible(196, 0.75), num_visible(4, 0.99)) == (16, 49, 1)
    assert (mae.num_patches, mae.num_visible) == (64, 16)
    order = views["patch_order"].numpy()
    assert order.shape == (BATCH, 64)
    for row in order:
        np.testing.assert_array_equal(np.sort(row), np.arange(64))
    assert len({tuple(row[:16]) for row in order}) == BATCH  # each image its own visible set
    _, removed = mae.predict_patches(views["images"], views["patch_order"])
    expected = np.ones((BATCH, 64), np.float32)
    for b in range(BATCH):
        expected[b, order[b, :16]] = 0
    np.testing.assert_array_equal(removed.numpy(), expected)
    assert removed.numpy().sum(1).tolist() == [48] * BATCH  # 75 % of every image


def test_encoder_sees_exactly_the_visible_tokens(mae, views):
    x, order = views["images"].numpy(), views["patch_order"].numpy()
    latent = mae.encode_visible(tf.constant(x), tf.constant(order)).numpy()
    assert latent.shape == (BATCH, 16, 24)
    tokens = vit.embed_patches(mae.encoder, x).numpy()
    visible = np.stack([tokens[b, order[b, :16]] for b in range(BATCH)])  # numpy gather
    np.testing.assert_allclose(latent, vit.encode_tokens(mae.encoder, visible).numpy(), atol=1e-5)

    def edit_patch(k):
        """Image 0 with patch k (row-major on the 8 x 8 grid of 4 px patches) set to noise."""
        edited = x.copy()
        i, j = divmod(int(k), 8)
        edited[0, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = np.random.default_rng(k).uniform(size=(4, 4, 3))
        return mae.encode_visible(tf.constant(edited), tf.constant(order)).numpy()
    np.testing.assert_array_equal(edit_patch(order[0, 40]), latent)   # a removed patch: no effect
    assert np.abs(edit_patch(order[0, 3])[0] - latent[0]).max() > 1e-3  # a visible patch: seen


def test_normalize_patches_matches_numpy():
    p = np.random.default_rng(2).normal(size=(2, 5, 48)).astype(np.float32)
    expected = (p - p.mean(-1, keepdims=True)) / np.sqrt(p.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normalize_patches(tf.constant(p)).numpy(), expected, atol=1e-5)


def test_masked_loss_by_hand():
    # 1 image, 3 patches of 2 values; patches 0 and 2 removed: ((1 + 9) / 2 + (4 + 0) / 2) / 2 = 3.5.
    prediction = np.array([[[1, 3], [100, -100], [2, 0]]], np.float32)
    target = np.zeros((1, 3, 2), np.float32)
    assert float(masked_patch_loss(prediction, target, np.array([[1, 0, 1]]))) == pytest.approx(3.5)


def test_mae_loss_equals_numpy_and_ignores_the_visible_patches(mae, views):
    x, order = views["images"].numpy(), views["patch_order"].numpy()
    removed = np.ones((BATCH, 64))
    for b in range(BATCH):
        removed[b, order[b, :16]] = 0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    target = _numpy_patchify((x - mean) / std, 4)
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(mae.targets(tf.constant(x)).numpy(), target, atol=1e-4)

    prediction = np.random.default_rng(3).normal(size=(BATCH, 64, 48))
    expected = ((prediction - target) ** 2).mean(-1)[removed == 1].mean()
    loss = float(masked_patch_loss(prediction, target, removed))
    assert loss == pytest.approx(expected, rel=1e-5)
    visible_changed = np.where(removed[..., None] == 0, prediction + 7.0, prediction)
    assert float(masked_patch_loss(visible_changed, target, removed)) == pytest.approx(loss, rel=1e-6)
    removed_changed = np.where(removed[..., None] == 1, prediction + 0.5, prediction)
    assert abs(float(masked_patch_loss(removed_changed, target, removed)) - loss) > 0.1

    # The method's loss is this loss on its own predictions.
    own, own_removed = mae.predict_patches(tf.constant(x), tf.constant(order))
    expected = ((own.numpy() - target) ** 2).mean(-1)[removed == 1].mean()
    np.testing.assert_array_equal(own_removed.numpy(), removed)
    assert float(mae.pretext_loss(views)[0]) == pytest.approx(expected, rel=1e-4)


def test_decoder_puts_every_token_back_at_its_patch():
    """With no blocks the decoder is per-token: pred(LN(embed(z) + pos_j)) at the visible patch j
    of z, pred(LN(mask + pos_j)) at the removed ones: checked in numpy, for order [3, 1, 0, 2]."""
    keras.utils.set_random_seed(0)
    decoder = MAEDecoder(grid=2, patch_pixels=3, dim=4, depth=0)
    decoder.build((None, 2, 5))
    latent = np.random.default_rng(4).normal(size=(1, 2, 5)).astype(np.float32)
    order = np.array([[3, 1, 0, 2]])
    out = decoder(latent, tf.constant(np.argsort(order, axis=1).astype(np.int32))).numpy()[0]
    we, be = (w.numpy() for w in decoder.embed.weights)
    wp, bp = (w.numpy() for w in decoder.pred.weights)
    gamma, beta = (w.numpy() for w in decoder.norm.weights)
    pos = _numpy_sincos(2, 2, 4)

    def head(token):
        normed = (token - token.mean()) / np.sqrt(token.var() + 1e-6)
        return (normed * gamma + beta) @ wp + bp
    mask = decoder.mask_token.numpy().reshape(4)
    expected = {3: latent[0, 0] @ we + be, 1: latent[0, 1] @ we + be, 0: mask, 2: mask}
    for j in range(4):
        np.testing.assert_allclose(out[j], head(expected[j] + pos[j]), atol=1e-5)


def test_zoo_load_builds_a_vit_encoder_from_metadata_and_its_weights(mae, tmp_path):
    """zoo.load's path (zoo.hub.build_encoder from the metadata fields export writes, then the
    weights file): the trained MAE encoder comes back with the same features."""
    trained = ImageEncoder(mae.encoder, 32)
    trained.save_weights(tmp_path / "model.weights.h5")
    meta = {"name": "mae_vit_tinyw0125_test", "backbone": {"name": "vit_tiny", "width": 0.125, "stem": "cifar"},
            "input": {"image_size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "files": {"model.weights.h5": {}}}
    keras.utils.set_random_seed(5)
    loaded = build_encoder(meta)
    images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    assert np.abs(loaded(images).numpy() - trained(images).numpy()).max() > 1e-3  # other weights
    loaded.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(loaded(images).numpy(), trained(images).numpy(), atol=1e-6)


# ---- other methods on the ViT ---------------------------------------------------------------

# 4-9 s each: simclr by default, the others of issue 18's list under -m slow.
@pytest.mark.parametrize("name", slow_except(["simclr", "mocov3", "byol", "dino"], keep=("simclr",)))
def test_methods_without_feature_maps_run_on_the_vit(name):
    keras.utils.set_random_seed(0)
    method = zoo.create(name, **TINY_VIT)
    data = zoo.data.load_arrays("shapes", "train")
    views = method.make_views(tf.constant(data.images[:BATCH]), tf.constant(data.labels[:BATCH]), tf.constant([3, 4]))
    with tf.GradientTape() as tape:
        loss, _ = method.pretext_loss(views, training=True)
    grads = tape.gradient(loss, method.encoder.trainable_variables)
    assert vit.is_vit(method.encoder) and np.isfinite(float(loss))
    assert all(g is not None and np.any(tf.convert_to_tensor(g).numpy()) for g in grads)


# ---- per-block probes, stage freezing and model cards on the ViT ------------------------------

def test_block_probes_mean_pool_the_tokens_of_that_block(tiny_vit):
    """zoo.load(..., blocks=...) / zoo-eval --layer on a ViT: block K's features are numpy's mean
    over the tokens of block K's output (from a sub-model of the backbone)."""
    from zoo.encoder import block_encoder, layer_encoder
    encoder = ImageEncoder(tiny_vit, 32)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    outputs = keras.Model(tiny_vit.input, [tiny_vit.get_layer(f"block{i}_out").output for i in (6, 12)])
    tokens6, tokens12 = (t.numpy() for t in outputs(images.astype(np.float32) / 255.0))  # [3, 64, 24] each
    pooled = block_encoder(encoder, ["block6", "block12"])(images)
    assert block_encoder(encoder, ["block6"]).feature_dim == {"block6": 24}
    np.testing.assert_allclose(pooled["block6"].numpy(), tokens6.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(pooled["block12"].numpy(), tokens12.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(layer_encoder(encoder, "block6")(images).numpy(), tokens6.mean(axis=1), atol=1e-5)
    unpooled = block_encoder(encoder, ["block6"], pooled=False)(images)["block6"].numpy()
    np.testing.assert_allclose(unpooled, tokens6, atol=1e-5)
    # different blocks differ, and the last one pooled is not the features (the final LayerNorm comes between)
    assert np.abs(tokens6.mean(1) - tokens12.mean(1)).max() > 1e-3
    assert np.abs(tokens12.mean(1) - encoder(images).numpy()).max() > 1e-3
    names = ", ".join(f"block{i}" for i in range(1, 13))
    with pytest.raises(ValueError, match=f"'stage2'.*{names}\\b"):
        layer_encoder(encoder, "stage2")
    with pytest.raises(ValueError, match=f"block13.*{names}\\b"):
        block_encoder(encoder, ["block1", "block13"])


# weights of each unit of vit_tiny at width 0.125 (D = 24, MLP 96, patch 4), counted by hand:
# patch_embed 4*4*3*24 + 24; a block: 2 LayerNorms 2*(24 + 24), attention q, k, v, out 4*(24*24 + 24),
# MLP 24*96 + 96 + 96*24 + 24; encoder_norm 24 + 24.
_PATCH_EMBED, _BLOCK, _NORM = 1176, 96 + 2400 + 2400 + 2328, 48
TINY_VIT_UNITS = [("patch_embed", _PATCH_EMBED)] + [(f"block{i}", _BLOCK) for i in range(1, 13)] + \
    [("encoder_norm", _NORM)]


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_freeze_stages_freezes_the_first_units_of_a_vit():
    from zoo.finetune import freeze_stages, stages
    keras.utils.set_random_seed(0)
    encoder = ImageEncoder(build_backbone("vit_tiny", width=0.125, image_size=32), 32)
    assert stages(encoder.backbone) == [name for name, _ in TINY_VIT_UNITS]
    total = sum(count for _, count in TINY_VIT_UNITS)
    assert _count(encoder.weights) == total == 87_912
    for n in (0, 1, 2, 7, 13, 14, 3):  # the last one unfreezes again
        frozen = freeze_stages(encoder, n)
        assert frozen == [name for name, _ in TINY_VIT_UNITS[:n]]
        assert _count(encoder.non_trainable_weights) == sum(count for _, count in TINY_VIT_UNITS[:n])
        assert _count(encoder.trainable_weights) == total - sum(count for _, count in TINY_VIT_UNITS[:n])
    with pytest.raises(ValueError, match=r"k=15; expected 0\.\.14 .*patch_embed, block1, .*block12, encoder_norm"):
        freeze_stages(encoder, 15)


def test_model_card_describes_a_vit_by_its_size_patch_tokens_and_depth():
    from export.model_card import backbone_text, render_model_card
    meta = {"name": "mae_vit_tinyw0125_test", "method": "mae", "parameters": 87_912, "feature_dim": 24,
            "backbone": {"name": "vit_tiny", "width": 0.125, "stem": "cifar"},
            "input": {"image_size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "training": {"epochs": 1, "images_seen": 20, "batch_size": 20}, "results": []}
    # vit_tiny: patch 4, dim 192 x 0.125 = 24, depth 12 (VIT_SPECS; the ViT paper's Ti has depth 12)
    text = "ViT-Tiny at width 0.125, patch 4, 24-dim tokens, depth 12, mean-pooled tokens"
    assert backbone_text(meta["backbone"]) == text
    assert backbone_text({"name": "vit_small16", "width": 1.0, "stem": "imagenet"}) == (
        "ViT-Small at width 1.0, patch 16, 384-dim tokens, depth 12, mean-pooled tokens")
    card = render_model_card(meta)
    assert text in " ".join(card.split()) and "3x3 conv" not in card and "stem" not in card
    assert "patch_embed + block1 frozen" in card
    resnet = dict(meta, backbone={"name": "resnet18", "width": 0.25, "stem": "cifar"})
    assert "resnet18 (width 0.25, small-image stem: 3x3 conv, stride 1, no max-pool)" in render_model_card(resnet)


def test_model_card_probe_rows_of_a_vit_run_run_from_block1_to_the_final_features(tmp_path):
    import json
    from export.model_card import layer_probes
    for run, method_config, layers in (("mae", {"backbone": "vit_tiny"}, ["block10", "block2"]),
                                       ("mae_default", {}, ["block3"]),  # MAE's default backbone is a ViT
                                       ("rotation", {"width": 0.25}, ["stage3", "stem"])):
        folder = tmp_path / "runs" / run
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(json.dumps({"method": run.split("_")[0], "method_config": method_config}))
        (folder / "eval.json").write_text(json.dumps({"knn": {"top1": 0.5}}))
        for layer in layers:
            (folder / f"eval-{layer}.json").write_text(json.dumps({"layer": layer, "knn": {"top1": 0.4}}))
    rows = layer_probes(str(tmp_path / "runs"))
    assert [(r["run"], r["layer"]) for r in rows] == [
        ("runs/mae", "block2"), ("runs/mae", "block10"), ("runs/mae", "final"),
        ("runs/mae_default", "block3"), ("runs/mae_default", "final"),
        ("runs/rotation", "stem"), ("runs/rotation", "stage3"), ("runs/rotation", "stage4 (final)")]
