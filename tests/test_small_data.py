"""Small data as a user brings it (a folder of a few dozen images): the trainer adapts a batch
larger than the data and warns about what would silently hurt; progress lines outside a
terminal; `zoo-export --onnx` checks its packages first; cards of runs on a user's folder
carry neither its path nor CIFAR-10 text."""
import json
import os
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from trainers.callbacks import ProgressLines
from trainers.train import dropped_images_warning, fit_batch_to_data


def write_folder(root, counts, size=32, seed=0):
    """root/<class>/<i>.png, `counts` images per class: random noise on a class colour."""
    rng = np.random.default_rng(seed)
    for c, n in enumerate(counts):
        os.makedirs(root / f"class{c}")
        for i in range(n):
            image = rng.integers(0, 80, (size, size, 3)) + np.array([150 * (c % 2), 80, 150 * (1 - c % 2)])
            Image.fromarray(image.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


# --- 1. batch against data ---------------------------------------------------------------------

def test_a_batch_larger_than_the_data_is_reduced_to_fit():
    assert fit_batch_to_data(256, 450) == (256, None)
    batch, warning = fit_batch_to_data(500, 450, data="folder:x")
    assert batch == 450 and warning.startswith("WARNING:") and "\n" not in warning
    assert "500" in warning and "450 training images" in warning and "--batch-size" in warning
    assert fit_batch_to_data(500, 451, replicas=2)[0] == 450  # a multiple of the replicas: equal shares
    assert fit_batch_to_data(8, 3, replicas=2)[0] == 2
    with pytest.raises(ValueError, match="1 training images, fewer than the 2 replicas"):
        fit_batch_to_data(8, 1, replicas=2)


def test_dropping_more_than_a_quarter_of_every_epoch_is_warned_with_a_fix():
    # 450 images, batch 256: 1 step, 194 dropped (43 %); 2 steps of 225 drop none (by hand)
    warning = dropped_images_warning(450, 256)
    assert "trains 1 step and drops 194 images (43 %)" in warning
    assert "--batch-size 225 would train 2 steps of every epoch and drop 0" in warning
    # 100 images, batch 34: 2 steps, 32 dropped; 3 steps of 33 (2 replicas: 32) drop 1 (4)
    assert "drops 32 images (32 %)" in dropped_images_warning(100, 34)
    assert "--batch-size 32 would train 3 steps of every epoch and drop 4" in dropped_images_warning(100, 34, 2)
    assert dropped_images_warning(450, 225) is None
    assert dropped_images_warning(450, 200) is None  # 50 dropped: 11 %
    assert dropped_images_warning(100, 75) is None   # exactly 25 %: not more than a quarter


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """`zoo-train simclr --data PATH --batch-size 256`, in process, on 20 PNGs of 2 classes
    (18 train / 2 val)."""
    from trainers.train import main
    root = tmp_path_factory.getbasetemp()
    data = write_folder(tmp_path_factory.mktemp("data") / "my_photos", [10, 10])
    out = tmp_path_factory.mktemp("runs") / "photos_run"
    with pytest.MonkeyPatch.context() as patch:  # a progress line after every step (not every 10 s)
        patch.setattr(ProgressLines, "EVERY_SECONDS", 0.0)
        main(["simclr", "--data", str(data), "--epochs", "1", "--batch-size", "256", "--width", "0.125",
              "--set", "knn_every_epochs=0", "--out", str(out)])
    return {"root": str(root), "data": str(data), "out": str(out)}


def test_folder_run_trains_with_the_whole_folder_as_one_batch(folder_run):
    recipe = yaml.safe_load(open(os.path.join(folder_run["out"], "config.yaml")))
    assert recipe["batch_size"] == 18  # recorded, so eval / export / a rerun see the batch used
    log = open(os.path.join(folder_run["out"], "train.log")).read()
    warnings = [line for line in log.splitlines() if "WARNING: batch" in line]  # (not the collapse monitor's)
    assert len(warnings) == 1 and "batch size 256 is larger than the 18 training images" in warnings[0]
    assert "training with batch 18" in warnings[0]
    assert "18 train / 2 val images, batch 18, 1 steps/epoch" in log
    # stdout is not a terminal here (pytest captures it): zoo-train adds progress lines to Keras's
    assert re.search(r"epoch 1/1: step 1/1, [0-9.]+ images/s, ETA of the epoch 0 s, loss [0-9.]+\n", log)
    assert os.path.exists(os.path.join(folder_run["out"], "checkpoints", "step-00000001.weights.h5"))


def test_one_class_folder_warns_that_knn_means_nothing(tmp_path, monkeypatch):
    import trainers.train as train_module
    from trainers import recipes
    data = write_folder(tmp_path / "cats_only", [12])
    monkeypatch.setattr(train_module, "_train", lambda *args, **kwargs: None)  # only the checks and warnings
    recipe = recipes.load_recipe("simclr")
    recipe.update(data=str(data), epochs=1, batch_size=8)
    recipe["method_config"]["width"] = 0.125
    train_module.train(recipe, str(tmp_path / "run"), verbose=0)
    log = open(tmp_path / "run" / "train.log").read()
    assert "has one class (class0): the kNN accuracy (val_knn_top1) is 100 % for any encoder" in log
    assert "larger than" not in log  # batch 8 fits the 11 training images


# --- 2. progress outside a terminal -------------------------------------------------------------

def test_progress_lines_every_ten_seconds_of_wall_time():
    now = [0.0]
    lines = []
    progress = ProgressLines(batch_size=8, epochs=3, every_seconds=10, log=lines.append, clock=lambda: now[0])
    progress.set_params({"steps": 10, "epochs": 3})
    progress.on_epoch_begin(1)
    for batch in range(10):  # 3 s per step: lines after steps 4 (t = 12 s) and 8 (t = 24 s)
        now[0] += 3.0
        progress.on_train_batch_end(batch, {"loss": 1.25})
    # images/s = 4 x 8 / 12 = 2.67, ETA = 6 steps x 3 s = 18 s; then 64 / 24 and 2 x 3 s
    assert lines == ["epoch 2/3: step 4/10, 2.7 images/s, ETA of the epoch 18 s, loss 1.2500",
                     "epoch 2/3: step 8/10, 2.7 images/s, ETA of the epoch 6 s, loss 1.2500"]
    progress.on_epoch_begin(2)  # the interval restarts with each epoch
    now[0] += 5.0
    progress.on_train_batch_end(0, {})
    assert len(lines) == 2


# --- 3. zoo-export --onnx checks its packages first ----------------------------------------------

def test_onnx_packages_are_checked_before_any_conversion(folder_run, tmp_path, monkeypatch, capsys):
    import export.cli as cli
    converted = []
    monkeypatch.setattr(cli, "_importable", lambda name: name != "onnxruntime")
    monkeypatch.setattr(cli, "export_run", lambda *args, **kwargs: converted.append(args))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([folder_run["out"], "--name", "x", "--to", str(tmp_path / "pub"), "--tflite", "--onnx"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --onnx needs") and "\n" not in err
    assert "not installed: onnxruntime" in err and "pip install -e '.[onnx]'" in err
    assert converted == [] and not (tmp_path / "pub").exists()


# --- 4. model cards of runs on a user's folder --------------------------------------------------

def test_folder_run_card_has_no_local_paths_and_no_cifar(folder_run, tmp_path_factory):
    from export.cli import export_run
    out = folder_run["out"]
    with open(os.path.join(out, "eval.json"), "w") as f:  # as zoo-eval writes it for this run
        json.dump({"data": f"folder:{folder_run['data']}",
                   "split_description": f"val split of folder:{folder_run['data']} (2 images)",
                   "command": f"zoo-eval {out} --data {folder_run['data']}", "knn": {"top1": 0.5}}, f)
    try:
        folder = export_run(out, "my_photos_simclr", str(tmp_path_factory.mktemp("published")), saved_model=False)
    finally:
        os.remove(os.path.join(out, "eval.json"))
    card = open(os.path.join(folder, "README.md")).read()
    metadata = open(os.path.join(folder, "metadata.json")).read()
    for text in (card, metadata):
        assert folder_run["root"] not in text and folder_run["data"] not in text
        assert "CIFAR" not in text
    assert "cifar" not in card.lower()  # (the metadata keeps the backbone's stem name, "cifar", that zoo.load reads)
    meta = json.loads(metadata)
    assert meta["training"]["data_description"] == "18 training images in 2 classes from the folder `my_photos`"
    assert meta["training"]["data"] == "folder:my_photos" and meta["training"]["recipe"]["data"] == "folder:my_photos"
    assert meta["results"][0]["dataset"] == "my_photos"
    assert "- data: 18 training images in 2 classes from the folder `my_photos`" in card
    assert 'zoo.load("' in card and "datasets:" not in card


# --- images of different sizes in a folder ------------------------------------------------------

def test_a_folder_of_images_of_different_sizes_says_once_that_they_are_resized_and_to_what(tmp_path):
    import warnings
    import zoo
    for c, colour in enumerate((30, 200)):
        os.makedirs(tmp_path / "mixed" / f"class{c}")
        for i in range(3):  # a0-a2 (first in name order): 32x32; b0-b2: 64 wide, 48 high
            Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(tmp_path / "mixed" / f"class{c}" / f"a{i}.png")
            Image.fromarray(np.full((48, 64, 3), colour, np.uint8)).save(tmp_path / "mixed" / f"class{c}" / f"b{i}.png")
    spec = f"folder:{tmp_path / 'mixed'}"
    for attempt in ("decoded", "from the cache"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = zoo.data.load_arrays(spec, "all")
        said = [str(w.message) for w in caught if "different sizes" in str(w.message)]
        assert said == [f"the images under {tmp_path / 'mixed'} have different sizes: 6 of 12 (64x48 px) were "
                        "resized to 32x32 px (width x height), the size of the first image; add ?size=N to the "
                        "data spec to resize every image to NxN instead."], (attempt, said)
        assert data.images.shape == (12, 32, 32, 3)
        # a one-colour image stays that colour when resized
        np.testing.assert_array_equal(data.images.reshape(12, -1).min(1), data.images.reshape(12, -1).max(1))
        assert sorted(set(data.images[:, 0, 0, 0].tolist())) == [30, 200]
    with warnings.catch_warnings(record=True) as caught:  # every image resized as asked: nothing to say
        warnings.simplefilter("always")
        assert zoo.data.load_arrays(spec + "?size=16", "all").images.shape == (12, 16, 16, 3)
    assert not [w for w in caught if "different sizes" in str(w.message)]
