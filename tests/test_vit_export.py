"""A ViT encoder through the zoo's export, load, probe and fine-tune paths: `zoo-export` of an
untrained MAE run folder (vit_tiny at width 0.125, 32 px), then `zoo.load(export_folder)` and the
SavedModel's signatures against the run's own encoder (1e-5), TFLite and ONNX against it (1e-4),
per-block features of the export against numpy's mean over the block's tokens, `zoo-eval --layer
blockK` of the run, and stage freezing through a fine-tuning step. The SavedModel, TFLite and
ONNX exports take 10-25 s each here, so they run under `-m slow`."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from export.cli import main as zoo_export
from trainers.runs import run_encoder
from run_folders import untrained_run_folder

ATOL = 1e-5            # Keras preset and SavedModel against the run's encoder (the same float32 graph)
CONVERTED_ATOL = 1e-4  # TFLite / ONNX kernels (features are O(1))
DATA = "shapes?n=120"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return untrained_run_folder(str(tmp_path_factory.mktemp("run") / "mae"), DATA, method="mae")


@pytest.fixture(scope="module")
def images():
    return zoo.data.load_arrays(DATA, "val").images[:5]


@pytest.fixture(scope="module")
def run_model(run_dir):
    return run_encoder(run_dir)[2]


@pytest.fixture(scope="module")
def reference(run_model, images):
    features = run_model(images).numpy()
    assert np.abs(features).max() > 0.1  # features that are not all ~0, so the comparisons can fail
    return features


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The Keras files, metadata and card (the SavedModel, ~10 s, has its own test)."""
    to = str(tmp_path_factory.mktemp("published"))
    zoo_export([run_dir, "--name", "tiny_mae", "--to", to, "--no-saved-model"])
    return os.path.join(to, "tiny_mae")


def test_keras_preset_gives_the_run_encoders_features(exported, reference, images):
    meta = json.load(open(os.path.join(exported, "metadata.json")))
    assert meta["method"] == "mae" and meta["backbone"]["name"] == "vit_tiny" and meta["feature_dim"] == 24
    card = open(os.path.join(exported, "README.md")).read()
    assert "ViT-Tiny at width 0.125, patch 4, 24-dim tokens, depth 12, mean-pooled tokens" in " ".join(card.split())
    np.testing.assert_allclose(zoo.load(exported)(images).numpy(), reference, rtol=0, atol=ATOL)


@pytest.mark.slow  # 10-25 s on a 2-core machine: writing the SavedModel traces the ViT for both signatures
def test_saved_model_gives_the_run_encoders_features(run_dir, reference, images, tmp_path):
    zoo_export([run_dir, "--name", "tiny_mae_sm", "--to", str(tmp_path)])
    exported = str(tmp_path / "tiny_mae_sm")
    loaded = zoo.load(exported)
    np.testing.assert_allclose(loaded(images).numpy(), reference, rtol=0, atol=ATOL)
    served = tf.saved_model.load(os.path.join(exported, "saved_model"))
    out = served.signatures["serving_default"](images=tf.constant(images))["features"].numpy()
    np.testing.assert_allclose(out, reference, rtol=0, atol=ATOL)
    out = served.signatures["serving_float"](images=tf.constant(images, tf.float32))["features"].numpy()
    np.testing.assert_allclose(out, reference, rtol=0, atol=ATOL)
    bigger = tf.image.resize(images, [48, 40]).numpy().round().astype(np.uint8)  # any H, W: resized to 32
    np.testing.assert_allclose(served.signatures["serving_default"](images=tf.constant(bigger))["features"].numpy(),
                               loaded(bigger).numpy(), rtol=0, atol=ATOL)


def test_export_blocks_equal_the_runs_block_tokens_mean_pooled(run_model, exported, images):
    backbone = run_model.backbone
    tokens = keras.Model(backbone.input, backbone.get_layer("block6_out").output)(images.astype(np.float32) / 255.0)
    blocks = zoo.load(exported, blocks=["block6", "block12"])
    out = blocks(images)
    assert blocks.feature_dim == {"block6": 24, "block12": 24}
    np.testing.assert_allclose(out["block6"].numpy(), tokens.numpy().mean(axis=1), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="stage2.*block1, block2, .*block12"):
        zoo.load(exported, blocks=["stage2"])


def test_zoo_eval_layer_probes_a_block_of_a_vit_run(run_dir, tmp_path, capsys):
    from trainers.evaluate import main as zoo_eval
    out = tmp_path / "eval-block6.json"
    zoo_eval([run_dir, "--data", "shapes?n=40", "--protocol", "knn", "--layer", "block6", "--k", "3", "--out", str(out)])
    report = json.load(open(out))
    assert report["layer"] == "block6" and report["feature_dim"] == 24
    assert 0.0 <= report["knn"]["top1"] <= 1.0
    assert "[block6]" in capsys.readouterr().out


def test_frozen_units_stay_fixed_while_the_others_fine_tune(exported, images):
    keras.utils.set_random_seed(0)
    encoder = zoo.load(exported, trainable=True)
    frozen = zoo.finetune.freeze_stages(encoder, 2)
    assert frozen == ["patch_embed", "block1"]
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(3)(encoder(inputs)))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)  # one step: tracing the ViT's train step would take ~30 s
    backbone = encoder.backbone
    before = {name: [w.numpy().copy() for w in backbone.get_layer(name).weights]
              for name in ("patch_embed", "block1", "block2", "encoder_norm")}
    model.train_on_batch(images, np.arange(len(images)) % 3)
    for name, values in before.items():
        moved = max(np.abs(w.numpy() - b).max() for w, b in zip(backbone.get_layer(name).weights, values))
        assert (moved == 0) == (name in frozen), (name, moved)


def test_onnx_export_converts_the_exact_gelu(tmp_path):
    """TensorFlow's exact GELU (the ViT's MLP) is 0.5 x erfc(-x / sqrt 2); tf2onnx has no Erfc
    and export.saved_model converts it as 1 - erf. A one-layer encoder's ONNX features against
    numpy: 0.5 x (1 + erf(x / sqrt 2)) of the mean pixel / 255 times the kernel."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    import math
    from export.saved_model import run_onnx, write_onnx
    from zoo.encoder import ImageEncoder
    inputs = keras.Input((None, None, 3))
    dense = keras.layers.Dense(6, activation="gelu")
    encoder = ImageEncoder(keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs))), 8)
    dense.kernel.assign(np.linspace(-6, 6, 18).reshape(3, 6))  # pre-activations from about -6 to 6
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    x = (images / 255.0).mean(axis=(1, 2)) @ dense.kernel.numpy()
    expected = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    write_onnx(encoder, str(tmp_path / "gelu.onnx"))
    np.testing.assert_allclose(run_onnx(str(tmp_path / "gelu.onnx"), images), expected, rtol=0, atol=1e-5)


@pytest.mark.slow  # 20-60 s on a busy 2-core machine: the TFLite conversion ~8 s, tf2onnx ~15 s unloaded
def test_tflite_and_onnx_exports_match_the_run_encoder(run_dir, reference, images, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from export.saved_model import run_onnx, run_tflite
    zoo_export([run_dir, "--name", "tiny_mae_converted", "--to", str(tmp_path), "--tflite", "--onnx",
                "--no-saved-model"])
    folder = tmp_path / "tiny_mae_converted"
    meta = json.load(open(folder / "metadata.json"))
    np.testing.assert_allclose(zoo.load(str(folder))(images).numpy(), reference, rtol=0, atol=ATOL)
    for kind, run in (("tflite", run_tflite), ("onnx", run_onnx)):
        path = str(folder / meta["exports"][kind]["file"])
        assert meta["exports"][kind]["max_abs_diff_vs_keras"] <= CONVERTED_ATOL
        np.testing.assert_allclose(run(path, images), reference, rtol=0, atol=CONVERTED_ATOL)
        np.testing.assert_allclose(run(path, images[:1]), reference[:1], rtol=0, atol=CONVERTED_ATOL)
