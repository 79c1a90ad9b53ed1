"""Freeze an encoder into an export folder:

    NAME/
      config.json         architecture + input spec, Keras-preset style (zoo.load reads the
                          same fields from metadata.json)
      model.weights.h5    Keras weights of the ImageEncoder
      metadata.json       name, method, recipe, results, files with sha256 (the preset schema)
      saved_model/        TF SavedModel; signatures:
                            serving_default: uint8 [N, H, W, 3], any N, H, W -> {"features": [N, D]}
                            serving_float:   float32 [N, H, W, 3] in 0..255   -> {"features": [N, D]}
      README.md           model card (Hugging Face YAML header)

The folder is written under a temporary name and renamed at the end, so an interrupted export
leaves no folder under the final name.
"""
import json
import os
import platform
import shutil
import tempfile

import keras
import tensorflow as tf

from export.model_card import render_model_card
from zoo.hub import FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE, file_record


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_metadata(name, encoder, method, backbone_config, input_spec, training=None, results=None):
    """The metadata schema shared by export folders and package presets (files added later)."""
    return {
        "name": name,
        "format_version": FORMAT_VERSION,
        "method": method,
        "backbone": backbone_config,
        "input": input_spec,
        "feature_dim": int(encoder.feature_dim),
        "parameters": int(encoder.backbone.count_params()),
        "training": training or {},
        "results": results or [],
        "files": {},
    }


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


def write_export(encoder, metadata, to, overwrite=False, saved_model=True, card=True):
    """Write the export folder `to/NAME` atomically; returns its path."""
    name = metadata["name"]
    final = os.path.join(to, name)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite (overwrite=True) to replace it, "
                              "or choose another --name / --to.")
    os.makedirs(to, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=to)
    try:
        encoder.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"backbone": metadata["backbone"], "input": metadata["input"]}, f, indent=2)
        metadata = dict(metadata, files={WEIGHTS_FILE: file_record(os.path.join(tmp, WEIGHTS_FILE))})
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        if saved_model:
            write_saved_model(encoder, os.path.join(tmp, "saved_model"))
        if card:
            with open(os.path.join(tmp, "README.md"), "w") as f:
                f.write(render_model_card(metadata))
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
