"""What a Keras user does with the zoo's models: save and reload them with model.save /
keras.saving.load_model (safe mode) with the fine-tune helpers' state, a random-init baseline
(zoo.load(..., weights=None)), a ready classifier (zoo.classifier) trained on
keras.utils.image_dataset_from_directory output, and the encoders' details (zoo.describe).
References: the model before saving (outputs, weights, optimizer state), the preset JSON files
read here with json, and hand-set expectations."""
import glob
import json
import os
import re
import zipfile

import keras
import numpy as np
import pytest

import zoo
from zoo.encoder import ImageEncoder
from zoo.finetune import SplitOptimizer, freeze_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "simclr_resnet18w025_cifar10"
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# The tests train eagerly: tracing a train step costs ~8 s here and a step or two is all they
# take. The README example (slow test) trains in graph mode, as users do.
EAGER = {"run_eagerly": True}


@pytest.fixture(scope="module")
def images():
    return zoo.data.load_arrays("shapes?n=300", "val").images[:4]


def _user_model(encoder):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    head = keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(0), name="head")
    return keras.Model(inputs, head(encoder(inputs)))


def _save_and_load(model, tmp_path):
    path = str(tmp_path / "ft.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "Lambda" not in config and "__lambda__" not in config
    return keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("trainable", [True, False])
def test_loaded_encoder_under_a_dense_head_round_trips(trainable, images, tmp_path):
    encoder = zoo.load(NAME, trainable=trainable)
    model = _user_model(encoder)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, **EAGER)
    model.train_on_batch(images, np.arange(4))
    reloaded = _save_and_load(model, tmp_path)

    np.testing.assert_allclose(reloaded(images), model(images), rtol=1e-5, atol=1e-6)
    assert [w.path for w in reloaded.trainable_weights] == [w.path for w in model.trainable_weights]
    assert len(model.trainable_weights) == (62 if trainable else 2)  # frozen: only the head's kernel + bias
    encoder_again = reloaded.layers[1]
    assert isinstance(encoder_again, ImageEncoder) and encoder_again.trainable == trainable
    assert encoder_again.image_size == 32 and encoder_again.feature_dim == 128
    assert encoder_again.metadata["name"] == NAME
    assert encoder_again.metadata["files"] == zoo.hub.get_metadata(NAME)["files"]


@pytest.mark.parametrize("input_shape,image_size", [((48, 40, 3), (48, 40)), ((None, None, 3), None)])
def test_the_bare_encoder_round_trips_at_any_input_shape(input_shape, image_size, images, tmp_path):
    encoder = zoo.load(NAME, input_shape=input_shape)
    reloaded = _save_and_load(encoder, tmp_path)
    assert isinstance(reloaded, ImageEncoder) and reloaded.image_size == image_size
    np.testing.assert_allclose(reloaded(images), encoder(images), rtol=1e-5, atol=1e-6)


def test_freeze_stages_state_survives_save(images, tmp_path):
    encoder = zoo.load(NAME, trainable=True)
    frozen = freeze_stages(encoder, 2)
    reloaded = _save_and_load(_user_model(encoder), tmp_path).layers[1]
    flags = {layer.name: layer.trainable for layer in encoder.backbone.layers}
    assert {layer.name: layer.trainable for layer in reloaded.backbone.layers} == flags
    assert {name for name, on in flags.items() if not on} >= set(frozen)
    assert not reloaded.backbone.get_layer("stem_bn").trainable
    assert reloaded.backbone.get_layer("stage2_block1_conv1").trainable
    assert [w.path for w in reloaded.trainable_weights] == [w.path for w in encoder.trainable_weights]


def test_split_optimizer_round_trips_with_its_state(images, tmp_path):
    labels = np.arange(4)
    encoder = zoo.load(NAME, trainable=True)
    freeze_stages(encoder, 2)
    model = _user_model(encoder)
    model.compile(SplitOptimizer(encoder, keras.optimizers.Adam(1e-3), encoder_lr_scale=0.1), LOSS, **EAGER)
    model.train_on_batch(images, labels)
    reloaded = _save_and_load(model, tmp_path)

    optimizer = reloaded.optimizer
    assert isinstance(optimizer, SplitOptimizer) and optimizer.encoder_lr_scale == 0.1
    assert float(optimizer.head_optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(optimizer.encoder_optimizer.learning_rate) == pytest.approx(1e-4)
    assert int(optimizer.iterations.numpy()) == 1
    # Adam's moments after one step are nonzero: loaded, not re-initialised
    for part in ("encoder_optimizer", "head_optimizer"):
        saved, loaded = getattr(model.optimizer, part).variables, getattr(optimizer, part).variables
        assert len(saved) == len(loaded) > 2
        for a, b in zip(saved, loaded):
            np.testing.assert_array_equal(b.numpy(), a.numpy())
    # the same further step from both gives the same weights
    model.train_on_batch(images, labels)
    reloaded.train_on_batch(images, labels)
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_split_optimizer_from_a_config_routes_by_variable_path():
    encoder_weight, head_weight = keras.Variable(np.ones(3), name="enc_w"), keras.Variable(np.ones(2), name="head_w")
    optimizer = SplitOptimizer(["enc_w"], keras.optimizers.SGD(1.0), encoder_lr_scale=0.5)
    optimizer.apply([np.ones(3), np.ones(2)], [encoder_weight, head_weight])
    np.testing.assert_allclose(encoder_weight.numpy(), 1 - 0.5 * np.ones(3))  # lr 1.0 x 0.5
    np.testing.assert_allclose(head_weight.numpy(), np.zeros(2))             # lr 1.0
    twice = SplitOptimizer(["enc_w"], "sgd")
    with pytest.raises(ValueError, match="enc_w.*more than once"):
        twice.build([encoder_weight, keras.Variable(np.ones(3), name="enc_w")])


def test_random_init_encoder_is_the_same_architecture_untrained(images):
    pretrained = zoo.load(NAME)
    keras.utils.set_random_seed(0)
    random_init = zoo.load(NAME, weights=None)
    meta = json.load(open(os.path.join(ROOT, "zoo", "presets", f"{NAME}.json")))

    assert random_init(images).shape == pretrained(images).shape == (4, meta["feature_dim"])
    assert random_init.image_size == pretrained.image_size == meta["input"]["image_size"]
    for encoder in (random_init, pretrained):
        normalize = encoder.backbone.get_layer("normalize").get_config()
        np.testing.assert_allclose(normalize["mean"], meta["input"]["mean"], rtol=1e-6)
        np.testing.assert_allclose(np.sqrt(normalize["variance"]), meta["input"]["std"], rtol=1e-6)
    assert [w.path for w in random_init.weights] == [w.path for w in pretrained.weights]
    kernels = [(a, b) for a, b in zip(random_init.weights, pretrained.weights) if a.path.endswith("kernel")]
    assert len(kernels) == 20  # ResNet-18's convolutions: 1 stem + 8 blocks x 2 + 3 shortcuts
    for a, b in kernels:
        assert not np.allclose(a.numpy(), b.numpy()), a.path
    assert random_init.metadata["weights"] is None and "results" not in random_init.metadata
    assert not random_init.trainable

    # seeded: the same weights again, and those of benchmarks/random_init_baseline.py's seed-0
    # encoder (the README's "untrained encoder" row); another seed, other weights
    keras.utils.set_random_seed(0)
    again = zoo.load(NAME, weights=None)
    keras.utils.set_random_seed(0)
    benchmark = zoo.create("simclr", backbone="resnet18", width=0.25, image_size=32).encoder
    keras.utils.set_random_seed(1)
    other = zoo.load(NAME, weights=None)
    for a, b, c, d in zip(random_init.weights, again.weights, other.weights, benchmark.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
        np.testing.assert_array_equal(d.numpy(), a.numpy())
        if a.path.endswith("kernel"):
            assert not np.allclose(c.numpy(), a.numpy()), a.path


@pytest.mark.parametrize("bad", ["imagenet", True, "Pretrained"])
def test_bad_weights_value_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"weights=.*expected \"pretrained\".*or None"):
        zoo.load(NAME, weights=bad)


def _image_folder(root, per_class=6):
    train = zoo.data.load_arrays("shapes?n=300", "train")
    for label in (0, 1):
        folder = root / train.class_names[label]
        folder.mkdir(parents=True)
        for i, image in enumerate(train.images[train.labels == label][:per_class]):
            keras.utils.save_img(str(folder / f"{i}.png"), image, scale=False)
    return root


def test_classifier_trains_on_image_dataset_from_directory(tmp_path, images):
    folder = _image_folder(tmp_path / "images")
    data = keras.utils.image_dataset_from_directory(str(folder), image_size=(32, 32), batch_size=6, seed=0)
    batch_images, _ = next(iter(data))
    assert batch_images.dtype.name == "float32" and float(np.max(batch_images)) > 1.0  # 0..255 floats

    keras.utils.set_random_seed(0)
    model = zoo.classifier(NAME, num_classes=2, dropout=0.2)
    assert model(batch_images).shape == (6, 2)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "ImageEncoder", "Dropout", "Dense"]
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(keras.optimizers.Adam(1e-3), LOSS, **EAGER)
    history = model.fit(data, epochs=1, verbose=0)  # 2 steps of 6 images
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(moved)  # the encoder trains (trainable=True by default) and the head too

    # uint8 and float 0..255 give the same logits
    np.testing.assert_allclose(model(images), model(images.astype("float32")), rtol=1e-5, atol=1e-5)
    reloaded = _save_and_load(model, tmp_path)
    np.testing.assert_allclose(reloaded(images), model(images), rtol=1e-5, atol=1e-6)


def test_classifier_options_and_errors():
    frozen = zoo.classifier(NAME, num_classes=3, trainable=False, weights=None)
    assert [w.path for w in frozen.trainable_weights] == ["logits/kernel", "logits/bias"]
    assert frozen.layers[1].metadata["weights"] is None
    with pytest.raises(ValueError, match="num_classes=0"):
        zoo.classifier(NAME, num_classes=0)
    with pytest.raises(ValueError, match="dropout=1.5"):
        zoo.classifier(NAME, num_classes=2, dropout=1.5)


def test_describe_and_list_models_details_read_the_preset_json():
    paths = sorted(glob.glob(os.path.join(ROOT, "zoo", "presets", "*.json")))
    assert len(paths) == len(zoo.list_models()) > 0
    for path in paths:
        meta = json.load(open(path))
        info = zoo.describe(meta["name"])
        results = {r["protocol"]: r["top1"] for r in meta["results"]}
        assert info["method"] == meta["method"] and info["backbone"] == meta["backbone"]["name"]
        assert info["width"] == meta["backbone"]["width"] and info["parameters"] == meta["parameters"]
        assert info["image_size"] == meta["input"]["image_size"] and info["feature_dim"] == meta["feature_dim"]
        assert (info["knn_top1"], info["linear_top1"]) == (results["knn"], results["linear"])
        assert info["eval_split"].startswith("val")
        assert info["epochs"] == meta["training"]["epochs"]
        assert info["images_seen"] == meta["training"]["images_seen"]
        assert info["train_minutes"] == meta["training"]["minutes"]
        assert info["uses_labels"] == (meta["method"] in ("supcon", "triplet"))
        assert info["caveat"] == meta.get("caveat")
    assert zoo.describe("simclr_resnet18w025_cifar10")["knn_top1"] == 0.5452  # the README's table
    details = zoo.list_models(method="simclr", details=True)
    assert [d["name"] for d in details] == zoo.list_models(method="simclr") == ["simclr_resnet18w025_cifar10"]
    assert zoo.list_models(details=True) == [zoo.describe(name) for name in zoo.list_models()]


def _readme_example():
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("<!-- keras-api-example", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


@pytest.mark.slow  # ~12 s: the example trains in graph mode, as written
def test_readme_keras_api_example_runs(tmp_path, monkeypatch, images):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)
    np.testing.assert_allclose(scope["reloaded"](images), scope["model"](images), rtol=1e-5, atol=1e-6)
    assert scope["baseline"].metadata["weights"] is None
    assert scope["model"].history.history["loss"][-1] < np.log(10) + 1  # finite, not diverged


@pytest.mark.slow  # a new Python process (~8 s of TensorFlow start-up) and graph-mode steps
def test_a_new_process_loads_and_trains_a_saved_model_after_import_zoo_finetune(images, tmp_path):
    import subprocess
    import sys
    labels = np.arange(4)
    encoder = zoo.load(NAME, trainable=True)
    model = _user_model(encoder)
    model.compile(SplitOptimizer(encoder, keras.optimizers.Adam(1e-3)), LOSS)  # graph mode
    model.train_on_batch(images, labels)
    model.save(tmp_path / "ft.keras")
    np.save(tmp_path / "images.npy", images)
    code = ("import sys, numpy as np, keras, zoo.finetune\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "assert type(model.optimizer).__name__ == 'SplitOptimizer'\n"
            "images = np.load(sys.argv[3])\n"
            "model.train_on_batch(images, np.arange(4))\n"
            "np.save(sys.argv[2], model(images))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ft.keras"), str(tmp_path / "out.npy"),
                           str(tmp_path / "images.npy")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model.train_on_batch(images, labels)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model(images), rtol=1e-5, atol=1e-5)


def test_blocks_give_multi_scale_features_pooled_or_as_maps(images, tmp_path):
    encoder = zoo.load(NAME)
    pooled = zoo.load(NAME, blocks=["stage2", "stage3", "stage4"])
    out = pooled(images)
    assert {block: tuple(v.shape) for block, v in out.items()} == {"stage2": (4, 32), "stage3": (4, 64),
                                                                    "stage4": (4, 128)}
    assert pooled.feature_dim == {"stage2": 32, "stage3": 64, "stage4": 128}
    np.testing.assert_allclose(out["stage4"], encoder(images), rtol=1e-5, atol=1e-6)  # the encoder's features

    maps = zoo.load(NAME, blocks=["stem", "stage1", "stage2", "stage3", "stage4"], pooled=False)
    got = {block: v.numpy() for block, v in maps(images).items()}
    # ResNet-18 at width 0.25 with the CIFAR stem, at 32 px: 16/32/64/128 channels, stride 1, 1, 2, 2, 2
    assert {block: v.shape for block, v in got.items()} == {
        "stem": (4, 32, 32, 16), "stage1": (4, 32, 32, 16), "stage2": (4, 16, 16, 32), "stage3": (4, 8, 8, 64),
        "stage4": (4, 4, 4, 128)}
    for block in ("stage2", "stage3", "stage4"):  # pooled = the spatial mean of the map
        np.testing.assert_allclose(out[block], got[block].mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    symbolic = maps(keras.Input((32, 32, 3), dtype="uint8"))  # inside a user's functional model
    assert {block: tuple(t.shape) for block, t in symbolic.items()} == {
        block: (None, *v.shape[1:]) for block, v in got.items()}

    reloaded = _save_and_load(pooled, tmp_path)
    for block, value in reloaded(images).items():
        np.testing.assert_allclose(value, out[block], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"stage5.*stem, stage1, stage2, stage3, stage4"):
        zoo.load(NAME, blocks=["stage2", "stage5"])
    with pytest.raises(ValueError, match="pooled=False applies to blocks"):
        zoo.load(NAME, pooled=False)


def test_readme_blocks_example_runs():
    readme = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"```python\n(.*?)```", readme.split("<!-- blocks-example", 1)[1], re.S).group(1)
    scope = {"np": np, "zoo": zoo}  # imported by the README's first example
    exec(compile(code, "README.md", "exec"), scope)
    assert "# (4, 8, 8, 64)" in code
    assert tuple(scope["maps"](np.zeros((4, 32, 32, 3), np.uint8))["stage3"].shape) == (4, 8, 8, 64)


def test_embed_a_folder_gives_the_encoders_features_of_its_images(tmp_path):
    from PIL import Image
    folder = _image_folder(tmp_path / "images", per_class=3)
    top = zoo.data.load_arrays("shapes?n=300", "val").images[0]
    keras.utils.save_img(str(folder / "loose.png"), top, scale=False)  # at the top level: label -1
    features, paths, labels, class_names = zoo.embed(NAME, str(folder), batch_size=4)  # 7 images: 4 + 3

    assert len(paths) == 7 and paths == sorted(paths) and "loose.png" in paths
    assert class_names == sorted({p.parent.name for p in folder.glob("*/*.png")})
    for path, label in zip(paths, labels):
        assert label == (class_names.index(path.split("/")[0]) if "/" in path else -1)
    pixels = np.stack([np.asarray(Image.open(folder / path).convert("RGB")) for path in paths])
    encoder = zoo.load(NAME)
    np.testing.assert_allclose(features, encoder(pixels), rtol=1e-4, atol=1e-5)
    # a loaded model and a folder: spec work too; anything else is a clear error
    again, *_ = zoo.embed(encoder, f"folder:{folder}", batch_size=256, verbose=False)
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-6)
    with pytest.raises(zoo.data.DataError, match="not a folder of images.*load_arrays"):
        zoo.embed(encoder, "shapes")
    with pytest.raises(ValueError, match="batch_size=0"):
        zoo.embed(encoder, str(folder), batch_size=0)
