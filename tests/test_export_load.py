"""Export a tiny trained run, load it back every way a user can (Keras preset, SavedModel,
TFLite, ONNX, a Hugging Face cache), and check that the features agree, that bad input and bad
files are refused with a clear message, and that exports are atomic."""
import glob
import json
import os
import signal
import subprocess
import sys

import re

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
from hf_cache import put_in_hf_cache
from zoo.hub import HashMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TFLite / ONNX features vs the Keras model's, max |difference| (measured ~1e-6; features are O(1))
CONVERTED_ATOL = 1e-4


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


def test_loaded_encoder_fine_tunes_end_to_end(exported):
    """Under a new head, the loaded encoder trains: its own weights move and the model learns 20
    images' 10 labels (accuracy 1.0 after 25 Adam steps on every seed and kernel tried, against
    0.1 by chance; a frozen or gradient-less encoder leaves the weights fixed). Accuracy on held-out
    images is checked on the shipped encoder in test_finetune.py."""
    import keras
    keras.utils.set_random_seed(0)
    encoder = zoo.load(exported, trainable=True)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(10)(encoder(inputs)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = zoo.data.load_arrays("shapes?n=300", "train")
    images, labels = train.images[:20], np.arange(20) % 10
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    model.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(25), verbose=0)  # 25 steps
    assert all(np.abs(w.numpy() - b).max() > 0 for w, b in zip(encoder.trainable_weights, before)
               if "gamma" in w.path or "kernel" in w.path)
    assert model.evaluate(images, labels, verbose=0)[1] == 1.0


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


@pytest.mark.parametrize("scale,delta,accepted", [(1.0, 5e-5, True), (1.0, 2e-4, False), (0.01, 2e-4, False),
                                                   (80.0, 5e-3, True), (80.0, 2e-2, False)])
def test_converted_files_are_checked_relative_to_the_feature_scale(scale, delta, accepted):
    """1e-4 of the largest |feature| (at least 1): relative patch's features reach ~80."""
    from export.saved_model import ExportError, _check_converted
    reference = scale * np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    keras_model = lambda images: tf.constant(reference)  # noqa: E731
    converted = lambda path, images: reference + np.float32(delta)  # noqa: E731
    if accepted:
        assert _check_converted("tflite", converted, "unused", keras_model, None) == pytest.approx(delta, rel=1e-3)
    else:
        with pytest.raises(ExportError, match="--tflite: the converted model's features differ"):
            _check_converted("tflite", converted, "unused", keras_model, None)


def test_caveat_is_in_the_metadata_and_card_and_warned_at_load(run_dir, exported, tmp_path):
    import warnings
    from export.cli import main as export_main
    caveat = "kNN val accuracy at the untrained floor"
    export_main([run_dir, "--name", "flagged", "--to", str(tmp_path), "--no-saved-model", "--caveat", caveat])
    folder = tmp_path / "flagged"
    assert json.loads((folder / "metadata.json").read_text())["caveat"] == caveat
    assert f"> **Caveat:** {caveat}" in (folder / "README.md").read_text()
    with pytest.warns(UserWarning, match=f"flagged: {caveat}"):
        zoo.load(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an encoder without a caveat loads silently
        zoo.load(exported)


def test_interrupted_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-export")
    monkeypatch.setattr(saved_model_module, "write_saved_model", crash)
    with pytest.raises(KeyboardInterrupt):
        export_run(run_dir, "half", str(tmp_path))
    assert os.listdir(tmp_path) == []


_KILLED_EXPORT = """
import sys, time
import export.saved_model as sm
from export.cli import export_run
def stall(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(120)
sm.write_saved_model = stall
export_run(sys.argv[1], "killed", sys.argv[2])
"""


def test_export_killed_with_sigkill_leaves_no_folder(run_dir, tmp_path):
    """kill -9 in the middle of an export: no folder under the final name; the next export of
    that name removes the leftovers and writes a complete folder."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_EXPORT, run_dir, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert glob.glob(str(tmp_path / ".killed.partial-*" / "model.weights.h5"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not os.path.exists(tmp_path / "killed")
    folder = export_run(run_dir, "killed", str(tmp_path), saved_model=False)
    assert sorted(os.listdir(tmp_path)) == ["killed"]
    assert zoo.load(folder) is not None


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
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = os.path.join(str(tmp_path), "hub", "models--some-org--some-encoder")
    with pytest.raises(FileNotFoundError) as info:
        zoo.load("hf://some-org/some-encoder@v2")
    message = str(info.value)
    assert "HF_HUB_OFFLINE=1" in message and cache in message
    assert "hf download some-org/some-encoder --revision v2" in message


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """A fresh HF_HOME, offline: zoo.load may read its cache only."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_hf_name_loads_from_the_local_cache_offline(exported, images, hf_home):
    reference = zoo.load(exported)(images).numpy()
    commit = put_in_hf_cache(hf_home, "my-org/tiny_simclr", exported, skip=("saved_model",))
    put_in_hf_cache(hf_home, "my-org/tiny_simclr", exported, revision="v1", commit=commit, skip=("saved_model",))
    for target in ("hf://my-org/tiny_simclr", f"hf://my-org/tiny_simclr@{commit}", "hf://my-org/tiny_simclr@v1"):
        encoder = zoo.load(target)
        np.testing.assert_allclose(encoder(images).numpy(), reference, rtol=0, atol=0)
        assert encoder.metadata["name"] == "tiny_simclr"


def test_hf_cache_missing_weights_names_offline_and_the_cache(exported, hf_home):
    put_in_hf_cache(hf_home, "my-org/half", exported, skip=("saved_model", "model.weights.h5"))
    with pytest.raises(FileNotFoundError) as info:
        zoo.load("hf://my-org/half")
    message = str(info.value)
    assert "model.weights.h5" in message and "HF_HUB_OFFLINE=1" in message
    assert str(hf_home / "models--my-org--half") in message


def test_hf_cache_tampered_weights_are_refused(exported, hf_home):
    commit = put_in_hf_cache(hf_home, "my-org/bad", exported, skip=("saved_model",))
    blob = os.path.realpath(hf_home / "models--my-org--bad" / "snapshots" / commit / "model.weights.h5")
    with open(blob, "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\1" * 10)
    with pytest.raises(HashMismatchError, match="model.weights.h5.*refusing to load"):
        zoo.load("hf://my-org/bad")


def test_loading_never_deserialises_code(exported, tmp_path):
    """A metadata file whose architecture is a serialised Keras Lambda layer is refused, and
    the Lambda's code never runs (the encoder is built from known backbones only)."""
    import shutil
    import keras
    marker = tmp_path / "pwned"
    copy = tmp_path / "evil"
    shutil.copytree(exported, copy)
    meta = json.load(open(copy / "metadata.json"))
    evil = keras.layers.Lambda(eval(f"lambda x: open({str(marker)!r}, 'w').write('ran') and x"), name="evil")
    meta["backbone"] = keras.saving.serialize_keras_object(evil)
    with pytest.raises(ValueError, match="safe_mode"):  # Keras's own safe mode refuses it too
        keras.saving.deserialize_keras_object(meta["backbone"], safe_mode=True)
    (copy / "metadata.json").write_text(json.dumps(meta))
    (copy / "config.json").write_text(json.dumps({"backbone": meta["backbone"], "input": meta["input"]}))
    with pytest.raises(ValueError, match="metadata field backbone .*never deserialises"):
        zoo.load(str(copy))
    assert not marker.exists()
    meta["backbone"] = {"name": "resnet18", "width": "__import__('os')", "stem": "cifar"}
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="backbone.width"):
        zoo.load(str(copy))


def test_load_input_shape(exported, images):
    base = zoo.load(exported)
    same = zoo.load(exported, input_shape=(32, 32, 3))
    np.testing.assert_allclose(same(images).numpy(), base(images).numpy(), rtol=0, atol=0)
    bigger = tf.image.resize(images, [64, 64]).numpy().round().astype(np.uint8)
    at64 = zoo.load(exported, input_shape=(64, 64, 3))
    native = zoo.load(exported, input_shape=(None, None, 3))
    assert at64(images).shape == (5, 64)
    np.testing.assert_allclose(at64(bigger).numpy(), native(bigger).numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(at64(bigger).numpy() - base(bigger).numpy()).max() > 1e-3  # the backbone ran at 64 px
    for bad in [(64, 64), (64, 64, 1), (0, 64, 3)]:
        with pytest.raises(ValueError, match="input_shape"):
            zoo.load(exported, input_shape=bad)


@pytest.fixture(scope="module")
def exported_all(run_dir, tmp_path_factory):
    pytest.importorskip("tf2onnx")
    return export_run(run_dir, "tiny_simclr_all", str(tmp_path_factory.mktemp("published_all")),
                      saved_model=False, tflite=True, onnx=True)


def test_tflite_and_onnx_match_the_keras_model(run_dir, exported_all, images):
    from export.saved_model import run_onnx, run_tflite
    pytest.importorskip("onnxruntime")
    reference = run_encoder(run_dir)[2](images).numpy()
    meta = json.load(open(os.path.join(exported_all, "metadata.json")))
    assert set(meta["files"]) == {"model.weights.h5", "config.json", "model.tflite", "model.onnx"}
    for rel, info in meta["files"].items():
        assert info["sha256"] == zoo.hub.sha256(os.path.join(exported_all, rel))
    bigger = tf.image.resize(images, [48, 40]).numpy().round().astype(np.uint8)  # any H, W
    for kind, run in (("tflite", run_tflite), ("onnx", run_onnx)):
        path = os.path.join(exported_all, meta["exports"][kind]["file"])
        assert meta["exports"][kind]["max_abs_diff_vs_keras"] <= CONVERTED_ATOL
        np.testing.assert_allclose(run(path, images), reference, rtol=0, atol=CONVERTED_ATOL)
        np.testing.assert_allclose(run(path, images[:1]), reference[:1], rtol=0, atol=CONVERTED_ATOL)
        np.testing.assert_allclose(run(path, bigger), zoo.load(exported_all)(bigger).numpy(), rtol=0,
                                   atol=CONVERTED_ATOL)
    card = open(os.path.join(exported_all, "README.md")).read()
    assert "model.tflite" in card and "model.onnx" in card


def test_onnx_flag_fails_with_the_reason(run_dir, tmp_path, monkeypatch):
    from export.cli import main
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "tf2onnx", None)  # as if it were not installed
        with pytest.raises(SystemExit, match=r"--onnx needs tf2onnx .*pip install 'keras-ssl-zoo\[onnx\]'"):
            main([run_dir, "--name", "x", "--to", str(tmp_path), "--onnx", "--no-saved-model"])
    tf2onnx = pytest.importorskip("tf2onnx")

    def broken(*args, **kwargs):
        raise NotImplementedError("Unsupported ops: FancyNewOp")
    monkeypatch.setattr(tf2onnx.convert, "from_graph_def", broken)
    with pytest.raises(SystemExit, match=f"tf2onnx .* with TensorFlow {tf.__version__}: .*FancyNewOp"):
        main([run_dir, "--name", "x", "--to", str(tmp_path), "--onnx", "--no-saved-model"])
    assert os.listdir(tmp_path) == []  # nothing left behind


def test_publish_to_hub_up_to_the_network_call(run_dir, tmp_path, monkeypatch, capsys, hf_home, images):
    """zoo-export --to hf://org/repo@rev: the token from HF_TOKEN, the repo, branch and files
    sent (recorded instead of sent), the printed URL; then the uploaded files, laid out as the
    Hub's cache, load offline and their model card's code runs."""
    import huggingface_hub
    from export.cli import main
    calls, uploaded = [], tmp_path / "uploaded"

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, self.token, kwargs.get("exist_ok")))

    def create_branch(self, repo_id, branch, **kwargs):
        calls.append(("create_branch", repo_id, branch, self.token))

    def upload_folder(self, folder_path, repo_id, revision=None, **kwargs):
        import shutil
        calls.append(("upload_folder", repo_id, revision, self.token, sorted(os.listdir(folder_path))))
        shutil.copytree(folder_path, uploaded)

    for name, fn in [("create_repo", create_repo), ("create_branch", create_branch), ("upload_folder", upload_folder)]:
        monkeypatch.setattr(huggingface_hub.HfApi, name, fn)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    main([run_dir, "--name", "tiny_hub", "--to", "hf://my-org/tiny_hub@v1"])
    assert calls == [
        ("create_repo", "my-org/tiny_hub", "hf_test_token", True),
        ("create_branch", "my-org/tiny_hub", "v1", "hf_test_token"),
        ("upload_folder", "my-org/tiny_hub", "v1", "hf_test_token",
         ["README.md", "config.json", "metadata.json", "model.weights.h5", "saved_model"]),
    ]
    out = capsys.readouterr().out
    assert "https://huggingface.co/my-org/tiny_hub/tree/v1" in out and "zoo.load('hf://my-org/tiny_hub@v1')" in out
    meta = json.load(open(uploaded / "metadata.json"))
    assert meta["source"] == {"type": "huggingface", "repo_id": "my-org/tiny_hub", "revision": "v1"}
    put_in_hf_cache(hf_home, "my-org/tiny_hub", uploaded, revision="v1")
    reference = run_encoder(run_dir)[2](images).numpy()
    np.testing.assert_allclose(zoo.load("hf://my-org/tiny_hub@v1")(images).numpy(), reference, rtol=1e-5, atol=1e-5)
    code = re.search(r"```python\n(.*?)```", (uploaded / "README.md").read_text(), re.S).group(1)
    assert 'zoo.load("hf://my-org/tiny_hub@v1"' in code
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["features"].shape == (2, 64)
    # no token: refused before anything is exported or sent
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    calls.clear()
    with pytest.raises(SystemExit, match="no Hugging Face token: set HF_TOKEN"):
        main([run_dir, "--name", "tiny_hub", "--to", "hf://my-org/tiny_hub"])
    with pytest.raises(SystemExit, match="expected hf://ORG/REPO"):
        main([run_dir, "--name", "tiny_hub", "--to", "hf://not a repo"])
    assert calls == []


def test_local_export_card_code_runs(exported):
    code = re.search(r"```python\n(.*?)```", open(os.path.join(exported, "README.md")).read(), re.S).group(1)
    assert f'zoo.load("{exported}")' in code
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["features"].shape == (2, 64)


def test_zoo_eval_writes_knn_and_linear_results(run_dir, tmp_path, capsys):
    from trainers.evaluate import main
    out = tmp_path / "eval.json"
    main([run_dir, "--protocol", "knn,linear", "--k", "20", "--out", str(out)])
    report = json.load(open(out))
    assert report["data"] == "shapes?n=300" and report["split"] == "val"
    assert report["train_images"] == 250 and report["val_images"] == 50
    for protocol in ("knn", "linear"):
        assert 0.0 <= report[protocol]["top1"] <= 1.0
    assert report["knn"]["k_requested"] == 20 and report["knn"]["k"] <= 20 and report["command"].startswith("zoo-eval ")
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
    big = tf.image.resize(images[4:5], [50, 70]).numpy().round().astype(np.uint8)[0]
    tf.io.write_file(str(tmp_path / "imgs" / "loose.jpg"), tf.io.encode_jpeg(big))  # top level: unlabelled
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        main([exported, "--data", f"folder:{tmp_path / 'imgs'}", "--out", str(tmp_path / "f.npy"),
              "--batch-size", "2"])
    features = np.load(tmp_path / "f.npy")
    labels = np.load(tmp_path / "f.labels.npy")
    paths = (tmp_path / "f.paths.txt").read_text().splitlines()
    assert paths == ["cats/0.jpg", "cats/1.jpg", "dogs/0.jpg", "dogs/1.jpg", "dogs/2.jpg", "loose.jpg"]
    assert labels.tolist() == [0, 0, 1, 1, 1, -1]
    assert (tmp_path / "f.classes.txt").read_text().split() == ["cats", "dogs"]
    assert features.shape == (6, 64) and np.all(np.isfinite(features))
    encoder = zoo.load(exported)
    for row, rel in enumerate(paths):  # each row is the encoder's features of that file
        decoded = tf.io.decode_jpeg(tf.io.read_file(str(tmp_path / "imgs" / rel)))[None]
        np.testing.assert_allclose(features[row], encoder(decoded).numpy()[0], rtol=1e-4, atol=1e-4)
    # a plain path works too, and other data specs still go through zoo.data
    main([exported, "--data", str(tmp_path / "imgs" / "cats"), "--out", str(tmp_path / "g.npy")])
    assert np.load(tmp_path / "g.npy").shape == (2, 64) and np.load(tmp_path / "g.labels.npy").tolist() == [-1, -1]
    main([exported, "--data", "shapes?n=120", "--split", "val", "--out", str(tmp_path / "s.npy")])
    assert np.load(tmp_path / "s.npy").shape == (20, 64) and not (tmp_path / "s.paths.txt").exists()


def test_zoo_export_cli_refuses_to_overwrite(run_dir, exported):
    from export.cli import main
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main([run_dir, "--name", "tiny_simclr", "--to", os.path.dirname(exported)])
    with pytest.raises(SystemExit, match="not a zoo-train run folder"):
        main([os.path.dirname(exported), "--name", "x", "--to", os.path.dirname(exported)])
