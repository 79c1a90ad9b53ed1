"""Register an export folder in the package's preset registry (the encoders that ship with
keras-ssl-zoo). Uploading to the Hugging Face Hub is `zoo-export ... --to hf://org/repo`.

    python -m export.publish published/simclr_resnet18w025_cifar10        # -> zoo/presets/
    python -m export.model_card                                           # then refresh MODEL_CARDS.md
"""
import argparse
import os
import re
import shlex
import shutil

from zoo.hub import METADATA_FILE, PRESET_DIR, file_record, read_metadata, write_metadata

# Registered names follow zoo.hub.preset_name (METHOD_BACKBONE[wWIDTH]_DATASET): lower-case
# letters, digits and '_', so that NAME.json and weights/NAME.weights.h5 stay in preset_dir.
PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")

# A fixed input whose features every shipped preset records, so that a test notices when
# the architecture or the loading code changes what a published encoder computes.
FINGERPRINT_INPUT = ("shapes", "val", 4)


def fingerprint(encoder):
    import numpy as np
    import zoo
    spec, split, n = FINGERPRINT_INPUT
    images = zoo.data.load_arrays(spec, split).images[:n]
    features = np.asarray(encoder(images))
    return {"input": f"zoo.data.load_arrays({spec!r}, {split!r}).images[:{n}]",
            "features_first_row": [round(float(v), 5) for v in features[0, :8]],
            "features_mean": round(float(features.mean()), 6), "features_std": round(float(features.std()), 6)}


def register_in_package(folder, preset_dir=PRESET_DIR):
    """Copy an export folder's weights and metadata into the package registry; returns the
    preset JSON path. The SavedModel, TFLite / ONNX files and card stay in the export folder
    (the registry keeps the package small). A preset whose files live elsewhere has, instead
    of {"type": "package"}, a "source" naming a folder or a Hugging Face repo id + revision
    (see zoo/hub.py); its "files" paths are then relative to that place."""
    import zoo
    meta_path = os.path.join(folder, METADATA_FILE)
    meta = read_metadata(meta_path)
    name = meta.get("name")
    if not isinstance(name, str) or not PRESET_NAME.match(name):
        raise ValueError(f"{meta_path}: name {name!r} is not a registry name: use lower-case letters, digits "
                         "and '_' (METHOD_BACKBONE[wWIDTH]_DATASET, e.g. simclr_resnet18w025_cifar10); "
                         "re-export with zoo-export RUN --name NAME.")
    encoder = zoo.load(folder)  # checks every metadata field and the weights before anything is written
    zoo.hub.verify_files(meta, folder)
    (weights_rel,) = [rel for rel in meta["files"] if rel.endswith(".weights.h5")]  # zoo.load checked: one
    rel = f"weights/{name}.weights.h5"
    os.makedirs(os.path.join(preset_dir, "weights"), exist_ok=True)
    shutil.copyfile(zoo.hub.file_path(folder, weights_rel, meta_path), os.path.join(preset_dir, rel))
    meta["files"] = {rel: file_record(os.path.join(preset_dir, rel))}
    meta["source"] = {"type": "package"}
    meta.pop("exports", None)  # TFLite / ONNX files stay in the export folder
    meta["fingerprint"] = fingerprint(encoder)
    path = os.path.join(preset_dir, f"{name}.json")
    write_metadata(path, meta)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="Register an export folder as a preset shipped with the package.")
    p.add_argument("folder", help="an export folder written by zoo-export")
    args = p.parse_args(argv)
    try:
        path = register_in_package(args.folder)
    except (ValueError, OSError) as e:
        p.exit(1, f"error: {e}\n")
    print(f"registered {shlex.quote(path)}; now run: python -m export.model_card")


if __name__ == "__main__":
    main()
