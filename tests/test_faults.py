"""Faults a user can cause with zoo-train, zoo-eval, zoo-embed and zoo-export (issue 16): a
diverging loss, two writers on one folder, arguments that make nothing happen, errors that
came out as tracebacks, a named pipe among the images, outputs silently replaced, a full disk.

The CLIs' main(argv) run in this process (a subprocess costs ~6 s of TensorFlow start-up);
only the lock holder is another process, and it imports nothing but trainers/locks.py."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from run_folders import untrained_run_folder

DATA = "shapes?n=120"  # 100 train / 20 val images
TINY = ["--data", DATA, "--epochs", "1", "--batch-size", "20", "--width", "0.125", "--set", "knn_every_epochs=0"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCKS_PY = os.path.join(ROOT, "trainers", "locks.py")
DISK_FULL = re.compile(r"is full \(\d+(\.\d)? (bytes|KB|MB|GB) free of \d+(\.\d)? (bytes|KB|MB|GB)\)")


def _exit(main, argv, capsys):
    """(exit status, stdout, stderr) of main(argv)."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    out, err = capsys.readouterr()
    code = raised.value.code
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits with 1
        err, code = err + code + "\n", 1
    return code, out, err


def _assert_one_error_line(err, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _checkpoint_arrays(path):
    import h5py
    arrays = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: arrays.append(obj[()]) if hasattr(obj, "shape") else None)
    return [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder as zoo-train leaves it after 5 steps, made without training: the export /
    eval tests only read it."""
    return untrained_run_folder(str(tmp_path_factory.mktemp("faults") / "run"), DATA)


@pytest.fixture
def eager_training(monkeypatch):
    """zoo-train's fit without tracing the step (5 steps: ~3x faster), as tests/test_methods.py does."""
    from trainers import train
    compile_method = train.compile_method

    def compile_eagerly(method, recipe, steps_per_epoch):
        compile_method(method, recipe, steps_per_epoch)
        method.run_eagerly = True
        return method
    monkeypatch.setattr(train, "compile_method", compile_eagerly)


def _hold_lock(path):
    """A separate process holding the lock file `path` (started with trainers/locks.py alone)."""
    code = ("import importlib.util, sys, time\n"
            f"spec = importlib.util.spec_from_file_location('locks', {LOCKS_PY!r})\n"
            "locks = importlib.util.module_from_spec(spec); spec.loader.exec_module(locks)\n"
            f"with locks.folder_lock({str(path)!r}, 'test'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- 1. a non-finite loss ----------------------------------------------------------------

def test_nonfinite_loss_stops_the_run_keeping_the_last_finite_checkpoint(tmp_path, capsys, eager_training):
    """--lr 1e8 used to train on to "done", exit 0 and rotate the finite checkpoints out for NaN
    ones (or crash in the collapse monitor). Now: exit status 1 with one message naming the step
    and the checkpoint kept; every checkpoint in the folder is finite. (Rotation: its views cost
    less to trace than SimCLR's; SimCLR stops the same way, measured at step 4.)"""
    from trainers.callbacks import latest_checkpoint
    from trainers.train import main
    out = tmp_path / "run"
    code, _, err = _exit(main, ["rotation", *TINY, "--lr", "1e8", "--set", "checkpoint_every_steps=1",
                                "--out", str(out)], capsys)
    assert code == 1
    _assert_one_error_line(err)
    # Either the loss turns NaN first, or (measured: step 4) a batch-norm moving variance turns inf
    # while the loss, computed with batch statistics, is still finite.
    found = re.search(r"(the loss is nan|the weights hold NaN or inf) at step (\d+)", err)
    assert found, err
    step = int(found.group(2))
    kept, kept_step = latest_checkpoint(str(out / "checkpoints"))
    assert 1 <= kept_step < step and f"Kept the last finite checkpoint, {kept} (step {kept_step})" in err
    files = sorted(os.listdir(out / "checkpoints"))
    assert files and all(f.startswith("step-") for f in files)  # no half-written .tmp-* file
    for name in files:
        assert all(np.all(np.isfinite(a)) for a in _checkpoint_arrays(out / "checkpoints" / name)), name
    assert f"at step {step}" in (out / "train.log").read_text()


def test_checkpointer_stops_after_max_nonfinite_steps_and_never_saves_nonfinite_weights(tmp_path):
    """A Dense model whose 3rd batch holds a NaN input: the loss (Keras's running mean over the
    epoch) is non-finite from step 3 on. max_nonfinite_steps=0 stops at step 3, =1 at step 4;
    a save of the NaN weights is refused and the finite checkpoint of step 2 is kept."""
    import keras
    import tensorflow as tf
    from trainers.callbacks import Checkpointer, NonFiniteError
    x = np.ones((6, 2, 3), "float32")
    x[2, 0, 0] = np.nan
    data = tf.data.Dataset.from_tensor_slices((x, np.ones((6, 2, 1), "float32")))
    for max_steps, stop_step in ((0, 3), (1, 4)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        folder = tmp_path / f"max{max_steps}"
        checkpointer = Checkpointer(str(folder), every_steps=2, keep=5, log=lambda *_: None,
                                    max_nonfinite_steps=max_steps)
        with pytest.raises(NonFiniteError, match=f"at step {stop_step};.*step-00000002.weights.h5 \\(step 2\\)"):
            model.fit(data, epochs=1, verbose=0, callbacks=[checkpointer])
        assert sorted(os.listdir(folder)) == ["step-00000002.weights.h5"]
        with pytest.raises(NonFiniteError, match="weights hold NaN or inf at step 9"):
            checkpointer.save(9)  # the weights are NaN since step 3
        assert sorted(os.listdir(folder)) == ["step-00000002.weights.h5"]


def test_eval_export_and_embed_refuse_nonfinite_weights_or_features(trained_run, tmp_path, capsys, monkeypatch):
    import h5py
    import zoo
    from export.cli import main as export_main
    from export.saved_model import ExportError, write_export
    from trainers import embed
    from trainers.callbacks import latest_checkpoint
    from trainers.evaluate import main as eval_main
    from trainers.runs import run_encoder
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken, ignore=shutil.ignore_patterns("tensorboard", ".lock"))
    path, step = latest_checkpoint(str(broken / "checkpoints"))
    nan_path = broken / "checkpoints" / f"step-{step + 1:08d}.weights.h5"
    shutil.copy(path, nan_path)
    with h5py.File(nan_path, "r+") as f:  # every float array NaN, as a diverged run leaves them
        f.visititems(lambda name, obj: obj.__setitem__((), np.full(obj.shape, np.nan, obj.dtype))
                     if hasattr(obj, "shape") and np.issubdtype(obj.dtype, np.floating) and obj.shape else None)

    code, _, err = _exit(eval_main, [str(broken), "--protocol", "knn"], capsys)
    assert code == 2
    _assert_one_error_line(err, str(nan_path), "NaN or inf weights")
    code, _, err = _exit(export_main, [str(broken), "--name", "x", "--to", str(tmp_path / "pub"),
                                       "--no-saved-model"], capsys)
    assert code == 2 and not (tmp_path / "pub" / "x").exists()
    _assert_one_error_line(err, "NaN or inf weights")

    _, _, encoder, _ = run_encoder(trained_run)  # a finite run; then one weight made NaN
    weight = encoder.weights[0]
    weight.assign(np.full(weight.shape, np.nan, "float32"))
    with pytest.raises(ExportError, match="NaN or inf"):
        write_export(encoder, {"name": "y"}, str(tmp_path / "pub"))
    assert not (tmp_path / "pub" / "y").exists()

    monkeypatch.setattr(zoo, "load", lambda model: _FakeEncoder(nan=True))
    out = tmp_path / "features.npy"
    code, _, err = _exit(embed.main, ["fake", "--data", DATA, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    _assert_one_error_line(err, "NaN or inf features")


# --- 2. two writers on one folder -----------------------------------------------------------

def test_a_second_zoo_train_on_the_same_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    from trainers.locks import folder_lock
    from trainers.train import main
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out / ".lock")
    try:
        code, _, err = _exit(main, ["simclr", *TINY, "--out", str(out)], capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    _assert_one_error_line(err, f"run folder {out} is in use by another process (pid {holder.pid}")
    assert sorted(os.listdir(out)) == [".lock"]  # nothing written; the dead holder's lock file stays
    with folder_lock(str(out / ".lock"), "the run folder"):  # a dead holder's lock is taken over
        assert (out / ".lock").read_text().strip() == str(os.getpid())
    assert not (out / ".lock").exists()


def test_a_second_zoo_export_to_the_same_target_is_refused_and_nothing_is_replaced(trained_run, tmp_path, capsys):
    from export.cli import main
    to = tmp_path / "published"
    to.mkdir()
    (to / ".enc.partial-dead").mkdir()  # left by an export that was killed
    args = [trained_run, "--name", "enc", "--to", str(to), "--no-saved-model"]
    holder = _hold_lock(to / ".enc.lock")
    try:
        code, _, err = _exit(main, args, capsys)
        assert code == 2
        _assert_one_error_line(err, f"export target {to / 'enc'} is in use by another process (pid {holder.pid}")
        assert (to / ".enc.partial-dead").exists()  # another process's folder: not touched
    finally:
        holder.kill()
        holder.wait()
    previous = os.umask(0o027)
    try:
        main(args)
    finally:
        os.umask(previous)
    assert sorted(os.listdir(to)) == ["enc"]  # the dead export's partial folder and the lock are gone
    assert (os.stat(to / "enc").st_mode & 0o777) == 0o750  # the user's umask, not mkdtemp's 0o700
    capsys.readouterr()
    stamp = os.stat(to / "enc" / "model.weights.h5").st_mtime_ns
    code, _, err = _exit(main, args, capsys)
    assert code == 2
    _assert_one_error_line(err, "already exists", "--overwrite")
    assert os.stat(to / "enc" / "model.weights.h5").st_mtime_ns == stamp


# --- 3. arguments that make nothing happen ----------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--batch-size", "-4"], "batch_size (--batch-size) = -4 must be at least 1"),
    (["--batch-size", "0"], "batch_size (--batch-size) = 0 must be at least 1"),
    (["--epochs", "0"], "epochs (--epochs) = 0 must be at least 1"),
    (["--set", "epoch=5"], "unknown recipe field 'epoch': did you mean 'epochs'?"),
    (["--set", "method_config.bogus=1"], "unknown simclr config field 'bogus'"),
    (["--set", "method_config.temperature=warm"], "method_config.temperature = 'warm' must be a number"),
    (["--set", "optimizer.momentun=0.5"], "unknown sgd optimizer field 'momentun': did you mean 'momentum'?"),
    (["--set", "knn.kk=5"], "unknown knn field 'kk'"),
    (["--width", "-1"], "method_config.width (--width) = -1 must be in (0, 4]"),
    (["--width", "100"], "method_config.width (--width) = 100 must be in (0, 4]"),  # was an out-of-memory traceback
])
def test_arguments_that_make_nothing_happen_are_refused_before_the_run_folder_exists(tmp_path, capsys, args,
                                                                                     message):
    from trainers.train import main
    out = tmp_path / "run"
    code, _, err = _exit(main, ["simclr", *TINY, *args, "--out", str(out)], capsys)
    assert code == 2
    _assert_one_error_line(err, message)
    assert not out.exists()  # so the corrected command is not refused as "a different recipe"


def test_recipe_values_are_converted_to_the_config_field_types():
    """YAML reads `1e-1` as a string: it reaches the recipe as the float 0.1."""
    from trainers.train import parse_args, recipe_from_args
    recipe = recipe_from_args(parse_args(["simclr", "--set", "method_config.temperature=1e-1",
                                          "--set", "optimizer.weight_decay=5e-4", "--set", "epochs=3.0",
                                          "--set", "method_config.crop_scale=[0.2, 1]"]))
    assert recipe["method_config"]["temperature"] == 0.1 and type(recipe["method_config"]["temperature"]) is float
    assert recipe["optimizer"]["weight_decay"] == 5e-4 and recipe["epochs"] == 3 and type(recipe["epochs"]) is int
    assert recipe["method_config"]["crop_scale"] == [0.2, 1.0]
    with pytest.raises(ValueError, match="method_config.blur = 3 must be true or false"):
        recipe_from_args(parse_args(["simclr", "--set", "method_config.blur=3"]))


# --- 4. one error line, exit status 2 ----------------------------------------------------------

def test_every_cli_prints_one_error_line_and_exits_2_for_a_user_error(tmp_path, capsys):
    from export.cli import main as export_main
    from trainers.embed import main as embed_main
    from trainers.evaluate import main as eval_main
    from trainers.train import main as train_main
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("method: simclr\nepochs: [1\n")
    code, _, err = _exit(train_main, ["--config", str(bad_yaml), "--out", str(tmp_path / "a")], capsys)
    assert code == 2
    _assert_one_error_line(err, f"recipe file {bad_yaml} is not valid YAML")
    code, _, err = _exit(train_main, ["simclr", "--set", "epochs=[1", "--out", str(tmp_path / "b")], capsys)
    assert code == 2
    _assert_one_error_line(err, "--set 'epochs=[1': the value is not valid YAML")

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: [simclr\n")
    code, _, err = _exit(eval_main, [str(run)], capsys)
    assert code == 2
    _assert_one_error_line(err, f"{run / 'config.yaml'} is not valid YAML")
    code, _, err = _exit(export_main, [str(run), "--name", "x", "--to", str(tmp_path / "pub")], capsys)
    assert code == 2
    _assert_one_error_line(err, "is not valid YAML")
    code, _, err = _exit(embed_main, ["simclr_resnet18w025_cifar10", "--data", DATA, "--batch-size", "0",
                                      "--out", str(tmp_path / "f.npy")], capsys)
    assert code == 2
    _assert_one_error_line(err, "--batch-size 0: must be 1 or more")


# --- 5. zoo-embed -------------------------------------------------------------------------------

class _FakeEncoder:
    """Stands in for zoo.load(...): 8x8 inputs, features = the mean colour (or NaN)."""
    image_size = (8, 8)

    def __init__(self, nan=False):
        self.nan = nan

    def predict_on_batch(self, images):
        features = np.asarray(images, np.float32).mean(axis=(1, 2))
        return features * np.nan if self.nan else features

    __call__ = predict_on_batch


def _image_folder(root):
    from PIL import Image
    for name, colour in (("a.png", 10), ("b.png", 200)):
        Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(root / name)
    os.mkfifo(root / "c.png")  # reading it would block forever


def test_embed_skips_named_pipes_and_never_replaces_outputs_without_overwrite(tmp_path, capsys, monkeypatch):
    import zoo
    from trainers.embed import main
    from zoo.data.image_files import list_images
    images = tmp_path / "images"
    images.mkdir()
    _image_folder(images)
    with pytest.warns(UserWarning, match="not regular files"):
        assert list_images(str(images))[0] == ["a.png", "b.png"]

    monkeypatch.setattr(zoo, "load", lambda model: _FakeEncoder())
    out = tmp_path / "emb" / "features.npy"
    with pytest.warns(UserWarning, match="not regular files"):
        main(["fake", "--data", str(images), "--out", str(out)])
    capsys.readouterr()
    np.testing.assert_allclose(np.load(out), [[10, 10, 10], [200, 200, 200]])  # the colours, by hand
    assert (tmp_path / "emb" / "features.paths.txt").read_text() == "a.png\nb.png\n"

    code, _, err = _exit(main, ["fake", "--data", DATA, "--out", str(out)], capsys)
    assert code == 2
    _assert_one_error_line(err, "already exist", "--overwrite")
    assert np.load(out).shape == (2, 3)

    main(["fake", "--data", DATA, "--out", str(out), "--overwrite"])  # no paths for a data spec
    assert np.load(out).shape == (120, 3) and np.load(tmp_path / "emb" / "features.labels.npy").shape == (120,)
    assert sorted(os.listdir(tmp_path / "emb")) == ["features.classes.txt", "features.labels.npy", "features.npy"]


def test_embed_checks_out_and_batch_size_before_computing_features(tmp_path, capsys, monkeypatch):
    import zoo
    from trainers.embed import main

    def no_load(model):
        raise AssertionError("features computed before the arguments were checked")
    monkeypatch.setattr(zoo, "load", no_load)
    (tmp_path / "taken.npy").write_bytes(b"x")
    for args, message in ((["--out", str(tmp_path / "taken.npy")], "already exist"),
                          (["--out", str(tmp_path)], "is a folder"),
                          (["--out", str(tmp_path / "f.npy"), "--batch-size", "-1"], "--batch-size -1")):
        code, _, err = _exit(main, ["fake", "--data", DATA, *args], capsys)
        assert code == 2
        _assert_one_error_line(err, message)


# --- 6. --data as a plain folder path ----------------------------------------------------------

def test_a_plain_folder_path_is_folder_data_and_a_missing_one_is_not_found(tmp_path, capsys):
    from trainers.train import main, parse_args, recipe_from_args
    (tmp_path / "images" / "cats").mkdir(parents=True)
    recipe = recipe_from_args(parse_args(["simclr", "--data", str(tmp_path / "images")]))
    assert recipe["data"] == f"folder:{tmp_path / 'images'}"
    missing = tmp_path / "no" / "such"
    code, _, err = _exit(main, ["simclr", "--data", str(missing), "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    _assert_one_error_line(err, f"{missing} not found")
    assert not (tmp_path / "run").exists()


# --- 7. a full disk while writing ----------------------------------------------------------------

def _fill_disk(monkeypatch, cls, from_call, h5py_text=False):
    """From its `from_call`-th call on, `cls.save_weights` writes part of the file and then fails
    as on a full disk: OSError ENOSPC naming the file, or (h5py_text) h5py's OSError, which
    carries the C library's errno only in its text. Returns the paths it was called with."""
    import errno
    save, calls = cls.save_weights, []

    def save_weights(self, path, *args, **kwargs):
        calls.append(str(path))
        if len(calls) < from_call:
            return save(self, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n half a file")
        if h5py_text:
            raise OSError(f"Unable to synchronously create file (file write failed: filename = '{path}', "
                          "errno = 28, error message = 'No space left on device')")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(cls, "save_weights", save_weights)
    return calls


def _sha256(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("h5py_text", [False, True])
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_says_so(tmp_path, monkeypatch, h5py_text):
    """The checkpoint of step 3 meets a full disk after its temporary file exists: the partial
    .tmp-* file is removed, the checkpoints of steps 1 and 2 stay byte for byte, and
    DiskFullError names the folder, the space left (shutil.disk_usage) and the checkpoint kept.
    (Before: the OSError came out raw, and at the CLI as a traceback.)"""
    import keras
    import tensorflow as tf
    from trainers.callbacks import Checkpointer
    from trainers.errors import DiskFullError
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((4, 2, 3), "float32"), np.ones((4, 2, 1), "float32")))
    folder = tmp_path / "run" / "checkpoints"
    checkpointer = Checkpointer(str(folder), every_steps=1, keep=2, log=lambda *_: None)
    calls = _fill_disk(monkeypatch, keras.Model, 3, h5py_text)
    kept = {}
    real_save = checkpointer.save

    def save(step):  # the complete checkpoints as they are just before the failing write
        kept.update({name: _sha256(folder / name) for name in os.listdir(folder)})
        return real_save(step)
    monkeypatch.setattr(checkpointer, "save", save)
    with pytest.raises(DiskFullError) as raised:
        model.fit(data, epochs=1, verbose=0, callbacks=[checkpointer])
    message = str(raised.value)
    assert message.startswith(f"the disk of {folder} is full (") and DISK_FULL.search(message), message
    assert "checkpoint of step 3 could not be written" in message
    assert f"Kept the last complete checkpoint, {folder / 'step-00000002.weights.h5'} (step 2)" in message
    assert os.path.basename(calls[-1]).startswith(".tmp-")  # it failed with its temporary file half written
    assert sorted(os.listdir(folder)) == ["step-00000001.weights.h5", "step-00000002.weights.h5"]
    assert {name: _sha256(folder / name) for name in os.listdir(folder)} == kept


@pytest.mark.slow  # ~10 s: trains 3 steps; the Checkpointer test above covers the files, this the CLI's line
def test_zoo_train_on_a_full_disk_prints_one_error_line_naming_the_run_folder(tmp_path, capsys, monkeypatch,
                                                                             eager_training):
    import keras
    from trainers.callbacks import latest_checkpoint
    from trainers.train import main
    out = tmp_path / "run"
    _fill_disk(monkeypatch, keras.Model, 3)
    code, _, err = _exit(main, ["rotation", *TINY, "--set", "checkpoint_every_steps=1", "--out", str(out)], capsys)
    assert code == 1
    _assert_one_error_line(err, f"the disk of {out / 'checkpoints'} is full (", "free of",
                           f"Kept the last complete checkpoint, {out / 'checkpoints' / 'step-00000002.weights.h5'}",
                           "rerun the same command to resume")
    assert DISK_FULL.search(err)
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000001.weights.h5", "step-00000002.weights.h5"]
    assert latest_checkpoint(str(out / "checkpoints"))[1] == 2


def test_zoo_export_on_a_full_disk_prints_one_error_line_and_leaves_no_partial_folder(trained_run, tmp_path,
                                                                                     capsys, monkeypatch):
    import keras
    from export.cli import main
    to = tmp_path / "published"
    _fill_disk(monkeypatch, keras.Model, 1)
    code, _, err = _exit(main, [trained_run, "--name", "enc", "--to", str(to), "--no-saved-model"], capsys)
    assert code == 1
    _assert_one_error_line(err, "is full (", "free of", "model.weights.h5 failed")
    assert DISK_FULL.search(err)
    assert os.listdir(to) == []  # neither the partial folder nor the lock file stays


def test_only_a_full_disk_becomes_a_disk_full_error_line():
    import errno
    from trainers.errors import CommandError, user_errors
    with pytest.raises(CommandError) as raised:
        with user_errors():
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/some/folder/file.npy")
    assert raised.value.code == 1 and str(raised.value).startswith("error: the disk of /some/folder is full (")
    with pytest.raises(OSError, match="Input/output error"):  # any other OSError is no user error: traceback
        with user_errors():
            raise OSError(errno.EIO, os.strerror(errno.EIO), "/some/folder/file.npy")


# --- 8. an export whose weights file was altered ---------------------------------------------

def test_eval_and_embed_on_an_export_with_altered_weights_print_one_error_line(trained_run, tmp_path, capsys):
    """zoo.load still raises HashMismatchError; the CLIs turn it into one `error:` line naming
    the weights file (before: a RuntimeError traceback)."""
    import zoo
    from export.cli import export_run
    from trainers.embed import main as embed_main
    from trainers.evaluate import main as eval_main
    folder = export_run(trained_run, "altered", to=str(tmp_path / "pub"), saved_model=False)
    with open(os.path.join(folder, "model.weights.h5"), "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\0" * 10)
    with pytest.raises(zoo.hub.HashMismatchError, match="refusing to load"):
        zoo.load(folder)
    code, _, err = _exit(eval_main, [folder, "--data", DATA, "--protocol", "knn"], capsys)
    assert code == 2
    _assert_one_error_line(err, "model.weights.h5", "refusing to load")
    out = tmp_path / "features.npy"
    code, _, err = _exit(embed_main, [folder, "--data", DATA, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    _assert_one_error_line(err, "model.weights.h5", "refusing to load")


# --- 9. the reproducing command of a run folder whose path holds a space ----------------------

def test_the_train_command_of_a_run_folder_with_a_space_parses_back_into_its_argv(tmp_path):
    import shlex
    from trainers import recipes
    from trainers.runs import train_command
    run_dir = str(tmp_path / "my run" / "simclr")
    recipe = recipes.load_recipe("simclr")
    recipe["data"] = DATA
    assert shlex.split(train_command(run_dir, recipe)) == [
        "zoo-train", "simclr", "--config", os.path.join(run_dir, "config.yaml"), "--out", run_dir]
    recipe = recipes.load_recipe("simclr")  # the shipped CIFAR-10 recipe unchanged: its path in the repo
    assert recipe["data"].startswith("cifar10-jpeg")
    assert shlex.split(train_command(run_dir, recipe)) == [
        "zoo-train", "simclr", "--config", "trainers/configs/simclr_cifar10.yaml", "--out", run_dir]


# --- 10. the k of the kNN evaluation -------------------------------------------------------------

def test_zoo_eval_prints_the_k_it_used_and_the_model_card_names_it(trained_run, tmp_path, capsys):
    """shapes?n=120 has ~10 train images a class, so zoo-eval's k=200 is capped at the smallest
    class: the printed line and the model card name the k recorded in eval.json (the card used to
    say k=200 whatever was used)."""
    import json
    from export.cli import export_run
    from trainers.evaluate import main as eval_main
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard", ".lock"))
    eval_main([str(run), "--protocol", "knn"])
    out = capsys.readouterr().out
    knn = json.load(open(run / "eval.json"))["knn"]
    assert knn["k_requested"] == 200 and knn["k"] == knn["smallest_class"] < 200
    assert f"(k={knn['k']}, not the --k 200 requested: the smallest class has {knn['smallest_class']} train " \
           "images)" in out
    eval_main([str(run), "--protocol", "knn", "--k", "3"])  # k as requested: nothing to say
    assert re.search(r"knn +top-1 = [\d.]+%\n", capsys.readouterr().out)
    knn = json.load(open(run / "eval.json"))["knn"]
    assert knn["k"] == 3
    card = open(os.path.join(export_run(str(run), "k3", str(tmp_path / "pub"), saved_model=False), "README.md")).read()
    assert "kNN (k=3, cosine, t=0.1)" in card and "k=200" not in card


# --- 11. zoo-eval and zoo-views take a plain folder path as --data --------------------------------

def _class_folder(root, classes=("a", "b"), per_class=4, sizes=((32, 32),)):
    """root/<class>/<i>.png: small PNGs of one colour per class, of the given (width, height)s in turn."""
    from PIL import Image
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(np.full((h, w, 3), 40 + 150 * c + i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_zoo_eval_and_zoo_views_take_a_plain_folder_path_and_say_not_found(trained_run, tmp_path, capsys):
    import json
    from trainers.evaluate import main as eval_main
    from trainers.show_views import main as views_main
    images = _class_folder(tmp_path / "images", per_class=10)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard", ".lock"))
    eval_main([str(run), "--data", str(images), "--protocol", "knn"])
    capsys.readouterr()
    report = json.load(open(run / "eval.json"))
    assert report["data"] == f"folder:{images}" and report["train_images"] + report["val_images"] == 20
    assert views_main(["rotation", "--data", str(images), "--out", str(tmp_path / "r.png"), "--n", "1",
                       "--set", "width=0.125"]) == 0
    assert (tmp_path / "r.png").is_file()

    missing = tmp_path / "no" / "such"
    code, _, err = _exit(eval_main, [str(run), "--data", str(missing)], capsys)
    assert code == 2
    _assert_one_error_line(err, f"{missing} not found")
    assert views_main(["rotation", "--data", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"{missing} not found" in err and "unknown data spec" not in err


# --- 12. zoo-eval on data of one class --------------------------------------------------------

def test_zoo_eval_on_one_class_warns_as_zoo_train_does(trained_run, tmp_path, capsys):
    from trainers.evaluate import main as eval_main
    images = _class_folder(tmp_path / "cats_only", classes=("cats",), per_class=10)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard", ".lock"))
    eval_main([str(run), "--data", str(images), "--protocol", "knn"])
    out, err = capsys.readouterr()
    assert (f"WARNING: folder:{images} has one class (cats): every top-1 accuracy (knn, linear, cluster) is 100 % "
            "for any encoder and means nothing. Put the images in 2 or more class sub-folders") in err
    assert "knn_every_epochs" not in err  # zoo-train's advice, not zoo-eval's
    assert "knn     top-1 = 100.00%" in out
