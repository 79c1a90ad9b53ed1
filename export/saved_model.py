"""Freeze an encoder into an export folder:

    NAME/
      config.json         architecture + input spec, Keras-preset style (zoo.load reads the
                          same fields from metadata.json)
      model.weights.h5    Keras weights of the ImageEncoder
      metadata.json       name, method, recipe, results, files with sha256 (the preset schema,
                          zoo.hub.make_metadata)
      saved_model/        TF SavedModel; signatures:
                            serving_default: uint8 [N, H, W, 3], any N, H, W -> {"features": [N, D]}
                            serving_float:   float32 [N, H, W, 3] in 0..255   -> {"features": [N, D]}
      README.md           model card (Hugging Face YAML header)
      model.tflite        optional (--tflite): Keras 3's LiteRT export; uint8 [N, H, W, 3], any N, H, W
      model.onnx          optional (--onnx): tf2onnx on the frozen graph; input "images" uint8
                          [N, H, W, 3], any N, H, W -> output "features" [N, D]

Every file but the SavedModel is listed with its sha256 in metadata["files"]; TFLite and ONNX
files are checked against the Keras model on a fixed input before the export is kept, and the
measured difference is recorded in metadata["exports"].

The folder is written under a temporary name (`.NAME.partial-*`) and renamed at the end, so an
interrupted export leaves no folder under the final name; leftovers of killed exports are
removed by the next export of the same name.
"""
import glob
import json
import os
import platform
import shutil
import tempfile

import keras
import tensorflow as tf

from export.model_card import render_model_card
from zoo.hub import METADATA_FILE, WEIGHTS_FILE, file_record, write_metadata

TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
# TFLite / ONNX features must match the Keras model's to this max |difference| on the check
# input, relative to the largest |feature| when that exceeds 1: float32 kernels differ by ~1e-6
# of the features' scale, which is O(1) for most encoders but ~80 for relative_patch's.
CONVERTED_TOLERANCE = 1e-4


def converted_tolerance(reference):
    """The max |difference| allowed between converted and Keras features `reference`."""
    import numpy as np
    return CONVERTED_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


class ExportError(RuntimeError):
    """A requested export format could not be written; the message says why."""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_images():
    """The fixed input converted files are checked on: 4 `shapes` images (uint8, 32 px)."""
    import zoo
    return zoo.data.load_arrays("shapes?n=120", "val").images[:4]


def run_tflite(path, images):
    """Features from a .tflite file through the LiteRT interpreter (ai_edge_litert if it is
    installed, else tf.lite.Interpreter, deprecated but still in TensorFlow 2.21)."""
    import warnings
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], images.astype(detail["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def run_onnx(path, images):
    """Features from a .onnx file through onnxruntime (CPU)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["features"], {"images": images})[0]


def write_tflite(encoder, path):
    """Keras 3's own LiteRT export (TFLite converter): uint8 [N, H, W, 3], any N, H, W."""
    try:
        encoder.export(path, format="litert", verbose=False,
                       input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    except Exception as e:
        raise ExportError(f"--tflite: Keras {keras.__version__}'s LiteRT export failed with TensorFlow "
                          f"{tf.__version__}: {type(e).__name__}: {e}") from e


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's Erfc, which it cannot convert and ONNX does not have:
    erfc(x) = 1 - erf(x). TensorFlow's exact GELU (the ViT's MLP) is 0.5 x erfc(-x / sqrt 2)."""
    import numpy as np
    from tf2onnx import utils
    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], inputs=[one.output[0], node.output[0]],
                                  name=utils.make_name(f"{name}_one_minus"))


def write_onnx(encoder, path, opset=17):
    """ONNX through tf2onnx on the frozen inference graph. (Keras 3's own
    `export(format="onnx")` writes a file here, but its Normalization constants become extra
    required graph inputs, so onnxruntime cannot run it with the image alone.)"""
    try:
        import onnx
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    except ImportError as e:
        raise ExportError(f"--onnx needs tf2onnx and onnx ({e}); install them with "
                          "pip install 'keras-ssl-zoo[onnx]'") from e
    try:
        fn = tf.function(lambda images: encoder(images, training=False))
        frozen = convert_variables_to_constants_v2(
            fn.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")))
        inputs, outputs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
        model, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs,
                                                 output_names=outputs, opset=opset,
                                                 custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
    except Exception as e:
        raise ExportError(f"--onnx: tf2onnx {tf2onnx.__version__} could not convert this encoder with "
                          f"TensorFlow {tf.__version__}: {type(e).__name__}: {e}") from e
    rename = {inputs[0]: "images", outputs[0]: "features"}
    for node in model.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = rename.get(value.name, value.name)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _check_converted(kind, run, path, encoder, images):
    """Max |difference| between a converted file's features and the Keras model's on `images`;
    raises ExportError above `converted_tolerance`."""
    import numpy as np
    try:
        out = run(path, images)
    except ImportError as e:
        raise ExportError(f"--{kind}: cannot run the converted file to check it ({e}); install "
                          f"pip install 'keras-ssl-zoo[{kind}]'") from e
    reference = encoder(images).numpy()
    diff, tolerance = float(np.max(np.abs(np.asarray(out) - reference))), converted_tolerance(reference)
    if not diff <= tolerance:
        raise ExportError(f"--{kind}: the converted model's features differ from the Keras model's by {diff:.3g} "
                          f"(tolerance {tolerance:.3g}) on the check images; not exporting it.")
    return diff


def write_saved_model(encoder, path):
    """SavedModel with a uint8 and a float32 serving signature, both any batch and image size."""
    archive = keras.export.ExportArchive()
    archive.track(encoder)

    def features(images):
        return {"features": encoder(images, training=False)}

    archive.add_endpoint("serving_default", features,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("serving_float", features,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.write_out(path, verbose=False)


def _remove_leftovers(to, name):
    """Folders left by exports of `name` that were killed before they finished. Called with the
    target's lock held, so no live process is writing them."""
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for path in glob.glob(os.path.join(to, pattern)):
            shutil.rmtree(path, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_export(encoder, metadata, to, overwrite=False, saved_model=True, card=True, tflite=False, onnx=False,
                 load_as=None):
    """Write the export folder `to/NAME` atomically; returns its path. `load_as`: what the
    model card's code passes to zoo.load (default: the folder's path).

    One process per target: `to/.NAME.lock` (trainers.locks) is held while writing, so a
    second export of the same name is refused naming the first one's pid; an existing folder
    is replaced only with `overwrite`; weights holding NaN or inf are refused (ExportError)."""
    from trainers.callbacks import nonfinite_variables
    from trainers.locks import folder_lock
    name = metadata["name"]
    final = os.path.join(to, name)
    bad = nonfinite_variables(encoder.weights)
    if bad:
        raise ExportError(f"the encoder's weights hold NaN or inf ({len(bad)} variables, first {bad[0]}); "
                          "not exporting them (a diverged run?).")
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite (overwrite=True) to replace it, "
                              "or choose another --name / --to.")
    os.makedirs(to, exist_ok=True)
    with folder_lock(os.path.join(to, f".{name}.lock"), f"export target {final}"):
        if os.path.exists(final) and not overwrite:  # written meanwhile by a process that held the lock
            raise FileExistsError(f"{final} already exists; pass --overwrite (overwrite=True) to replace it, "
                                  "or choose another --name / --to.")
        _remove_leftovers(to, name)
        return _write_export(encoder, metadata, to, final, overwrite, saved_model, card, tflite, onnx, load_as)


def _write_export(encoder, metadata, to, final, overwrite, saved_model, card, tflite, onnx, load_as):
    name = metadata["name"]
    tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=to)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the export is the user's usual mode
        encoder.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"backbone": metadata["backbone"], "input": metadata["input"]}, f, indent=2)
        files = [WEIGHTS_FILE, "config.json"]
        exports = {}
        if tflite or onnx:
            images = check_images()
        if tflite:
            write_tflite(encoder, os.path.join(tmp, TFLITE_FILE))
            exports["tflite"] = {"file": TFLITE_FILE, "input": "uint8 [N, H, W, 3]", "output": "features [N, D]",
                                 "max_abs_diff_vs_keras": _check_converted(
                                     "tflite", run_tflite, os.path.join(tmp, TFLITE_FILE), encoder, images)}
            files.append(TFLITE_FILE)
        if onnx:
            write_onnx(encoder, os.path.join(tmp, ONNX_FILE))
            exports["onnx"] = {"file": ONNX_FILE, "input": "images: uint8 [N, H, W, 3]",
                               "output": "features [N, D]", "max_abs_diff_vs_keras": _check_converted(
                                   "onnx", run_onnx, os.path.join(tmp, ONNX_FILE), encoder, images)}
            files.append(ONNX_FILE)
        metadata = dict(metadata, files={rel: file_record(os.path.join(tmp, rel)) for rel in files})
        if exports:
            metadata["exports"] = exports
        write_metadata(os.path.join(tmp, METADATA_FILE), metadata)
        if saved_model:
            write_saved_model(encoder, os.path.join(tmp, "saved_model"))
        if card:
            with open(os.path.join(tmp, "README.md"), "w") as f:
                f.write(render_model_card(metadata, load_as=load_as or os.path.abspath(final)))
        if os.path.exists(final):  # overwrite: swap, then remove the old folder
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=to)
            os.rename(final, os.path.join(old, name))
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
