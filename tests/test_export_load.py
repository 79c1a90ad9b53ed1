"""Export a tiny trained run, load it back every way a user can, and check that the features
agree, that bad input is refused with a clear message, and that exports are atomic."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

import zoo
from export import saved_model as saved_model_module
from export.cli import export_run
from trainers import recipes
from trainers.runs import run_encoder
from trainers.train import train
from zoo.hub import HashMismatchError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "simclr")
    recipe = recipes.load_recipe("simclr")
    recipe.update(data="shapes?n=300", epochs=1, batch_size=50, knn_every_epochs=0)
    recipe["method_config"]["width"] = 0.125
    train(recipe, out, verbose=0)
    with open(os.path.join(out, "eval.json"), "w") as f:  # as zoo-eval writes it
        json.dump({"data": "shapes", "split_description": "val split of shapes", "command": "zoo-eval x",
                   "knn": {"top1": 0.5}}, f)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    return export_run(run_dir, "tiny_simclr", str(tmp_path_factory.mktemp("published")))


@pytest.fixture(scope="module")
def images():
    return zoo.data.load_arrays("shapes?n=300", "val").images[:5]


def test_export_folder_layout_and_metadata(exported):
    assert sorted(os.listdir(exported)) == ["README.md", "config.json", "metadata.json", "model.weights.h5",
                                            "saved_model"]
    meta = json.load(open(os.path.join(exported, "metadata.json")))
    assert meta["name"] == "tiny_simclr" and meta["method"] == "simclr"
    assert meta["backbone"] == {"name": "resnet18", "width": 0.125, "stem": "cifar"}
    assert meta["input"]["image_size"] == 32 and meta["feature_dim"] == 64
    assert meta["training"]["steps"] == 5 and meta["training"]["images_seen"] == 250
    assert meta["results"] == [{"protocol": "knn", "dataset": "shapes", "split": "val split of shapes",
                                "top1": 0.5, "command": "zoo-eval x"}]
    assert meta["files"]["model.weights.h5"]["sha256"] == zoo.hub.sha256(os.path.join(exported, "model.weights.h5"))
    card = open(os.path.join(exported, "README.md")).read()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["library_name"] == "keras"
    assert {"self-supervised", "image-feature-extraction", "simclr"} <= set(header["tags"])
    assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5
    assert "## Limitations" in card and "zoo.load(" in card


def test_keras_preset_and_saved_model_agree_with_the_trained_encoder(run_dir, exported, images):
    reference = run_encoder(run_dir)[2](images).numpy()
    loaded = zoo.load(exported)
    np.testing.assert_allclose(loaded(images).numpy(), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded(images.astype(np.float32)).numpy(), reference, rtol=1e-5, atol=1e-5)
    served = tf.saved_model.load(os.path.join(exported, "saved_model"))
    for batch in (images[:1], images):
        out = served.signatures["serving_default"](images=tf.constant(batch))["features"].numpy()
        np.testing.assert_allclose(out, reference[:len(batch)], rtol=1e-5, atol=1e-5)
    out = served.signatures["serving_float"](images=tf.constant(images, tf.float32))["features"].numpy()
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    bigger = tf.image.resize(images, [48, 40]).numpy().round().astype(np.uint8)  # any H, W
    np.testing.assert_allclose(served.signatures["serving_default"](images=tf.constant(bigger))["features"].numpy(),
                               loaded(bigger).numpy(), rtol=1e-5, atol=1e-5)


def test_load_trainable_flag(exported):
    assert zoo.load(exported).trainable_weights == []
    assert len(zoo.load(exported, trainable=True).trainable_weights) > 20


def test_loaded_encoder_fine_tunes_above_chance(exported):
    import keras
    keras.utils.set_random_seed(0)
    encoder = zoo.load(exported, trainable=True)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(10)(encoder(inputs)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train, val = zoo.data.load_arrays("shapes?n=1200", "train"), zoo.data.load_arrays("shapes?n=1200", "val")
    model.fit(train.images, train.labels, batch_size=50, epochs=4, verbose=0)
    accuracy = model.evaluate(val.images, val.labels, verbose=0)[1]
    assert accuracy > 0.3  # chance: 0.1


def test_tampered_weights_are_refused(exported, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    with open(copy / "model.weights.h5", "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\0" * 10)
    with pytest.raises(HashMismatchError, match="model.weights.h5.*refusing to load"):
        zoo.load(str(copy))


def test_existing_export_needs_overwrite(run_dir, exported):
    before = os.path.getmtime(os.path.join(exported, "metadata.json"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(run_dir, "tiny_simclr", os.path.dirname(exported))
    assert os.path.getmtime(os.path.join(exported, "metadata.json")) == before
    export_run(run_dir, "tiny_simclr", os.path.dirname(exported), overwrite=True, saved_model=False)
    assert not os.path.exists(os.path.join(exported, "saved_model"))
    assert zoo.load(exported) is not None


def test_interrupted_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-export")
    monkeypatch.setattr(saved_model_module, "write_saved_model", crash)
    with pytest.raises(KeyboardInterrupt):
        export_run(run_dir, "half", str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad, message", [
    (np.zeros((32, 32, 3), np.uint8), r"one image .* Add a batch axis: images\[None\]"),
    (np.zeros((2, 32, 32, 1), np.uint8), "1 channels .* grayscale: repeat"),
    (np.zeros((2, 32, 32, 4), np.uint8), "4 channels .* RGBA: drop alpha"),
    (np.zeros((2, 3, 32, 32), np.uint8), "channels-first"),
    (np.zeros((2, 32, 32, 3), bool), "dtype bool"),
    (np.zeros((2, 5, 32, 32, 3), np.uint8), "rank 5"),
])
def test_bad_images_get_a_clear_error(exported, bad, message):
    with pytest.raises(ValueError, match=message):
        zoo.load(exported)(bad)


def test_unit_range_floats_warn(exported):
    with pytest.warns(UserWarning, match="0..1.*Multiply by 255"):
        zoo.load(exported)(np.full((1, 32, 32, 3), 0.5, np.float32))


def test_unknown_names_and_paths():
    with pytest.raises(ValueError, match="Unknown model 'nonexistent_model'"):
        zoo.load("nonexistent_model")
    with pytest.raises(FileNotFoundError, match="No export folder"):
        zoo.load("./no/such/folder")
    with pytest.raises(ValueError, match="Did you mean 'simclr'"):
        zoo.create("simclrr")
    with pytest.raises(ValueError, match="unknown config field.*'temprature'"):
        zoo.create("simclr", temprature=0.1)


def test_hf_offline_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Offline, models are read from the Hugging Face cache"):
        zoo.load("hf://some-org/some-encoder")


def test_zoo_eval_writes_knn_and_linear_results(run_dir, tmp_path, capsys):
    from trainers.evaluate import main
    out = tmp_path / "eval.json"
    main([run_dir, "--protocol", "knn,linear", "--k", "20", "--out", str(out)])
    report = json.load(open(out))
    assert report["data"] == "shapes?n=300" and report["split"] == "val"
    assert report["train_images"] == 250 and report["val_images"] == 50
    for protocol in ("knn", "linear"):
        assert 0.0 <= report[protocol]["top1"] <= 1.0
    assert report["knn"]["k"] == 20 and report["command"].startswith("zoo-eval ")
    assert "knn     top-1" in capsys.readouterr().out
    # the second evaluation reads the cached features
    assert glob.glob(os.path.join(run_dir, "features", "*.npz"))
    with pytest.raises(SystemExit, match="Unknown protocol"):
        main([run_dir, "--protocol", "knn,svm", "--out", str(out)])


def test_zoo_embed_a_folder_of_jpegs(exported, tmp_path, images):
    from trainers.embed import main
    for label, name in enumerate(["cats", "dogs"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2 + label):
            tf.io.write_file(str(tmp_path / "imgs" / name / f"{i}.jpg"), tf.io.encode_jpeg(images[i]))
    (tmp_path / "imgs" / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        main([exported, "--data", f"folder:{tmp_path / 'imgs'}", "--out", str(tmp_path / "f.npy")])
    features = np.load(tmp_path / "f.npy")
    labels = np.load(tmp_path / "f.labels.npy")
    assert features.shape == (5, 64) and np.all(np.isfinite(features))
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 1]
    assert (tmp_path / "f.classes.txt").read_text().split() == ["cats", "dogs"]


def test_zoo_export_cli_refuses_to_overwrite(run_dir, exported):
    from export.cli import main
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main([run_dir, "--name", "tiny_simclr", "--to", os.path.dirname(exported)])
    with pytest.raises(SystemExit, match="not a zoo-train run folder"):
        main([os.path.dirname(exported), "--name", "x", "--to", os.path.dirname(exported)])
