"""`zoo-export RUN|NAME [--name NAME] [--to DIR | hf://org/repo[@revision]] [--tflite] [--onnx]`: freeze an encoder.

Writes the export folder (see export/saved_model.py) into the local store DIR (default
./published); with `--to hf://org/repo[@revision]` it writes it to a temporary folder and
uploads it to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`), on the branch
`revision` (default main), and prints the URL. `--tflite` / `--onnx` add model.tflite /
model.onnx, each checked against the Keras model before it is kept.
"""
import argparse
import functools
import os
import re
import tempfile

DATA_DESCRIPTIONS = {
    "cifar10-jpeg": "CIFAR-10 training images as JPEGs: the 45,000-image train split (500 per class held "
                    "out as val, seed 0)",
    "shapes": "the generated `shapes` data set (train split)",
}


def user_folder(data):
    """The image folder of a `folder:PATH[?options]` data spec (a user's own images), else None."""
    kind, _, rest = data.partition(":")
    return rest.partition("?")[0] if kind == "folder" else None


def folder_description(data):
    """"N training images in K classes from the folder `NAME`": the folder's base name, not its
    path (a card must not publish where a user keeps their files)."""
    import zoo
    name = os.path.basename(os.path.normpath(user_folder(data)))
    try:
        train = zoo.data.load_arrays(data, "train")
    except (OSError, ValueError):  # the folder moved since training: no counts
        return f"images from the folder `{name}` (train split)"
    return (f"{len(train.images):,} training images in {train.num_classes} "
            f"class{'es' if train.num_classes != 1 else ''} from the folder `{name}`")


def _replace_paths(value, replacements):
    """`value` (JSON-like) with every occurrence of each path in `replacements` replaced."""
    if isinstance(value, dict):
        return {k: _replace_paths(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_paths(v, replacements) for v in value]
    if isinstance(value, str):
        for path, shown in replacements:
            value = value.replace(path, shown)
    return value


def without_local_paths(value, run_dir, data):
    """Metadata of a run on a user's folder with the folder's and the run's paths replaced by
    their base names (longest first, so a path inside another is replaced whole)."""
    paths = {}
    for path in (user_folder(data), run_dir):
        for form in {path, os.path.abspath(path), os.path.realpath(path)}:
            if form.rstrip("/") not in ("", "."):
                paths[form.rstrip("/")] = os.path.basename(os.path.normpath(path))
    return _replace_paths(value, sorted(paths.items(), key=lambda item: -len(item[0])))


def run_training_info(run_dir, recipe, step):
    from export.saved_model import cpu_model
    from trainers.runs import final_pretext_metrics, train_command
    seconds, pretext = final_pretext_metrics(run_dir)
    kind = recipe["data"].split(":", 1)[0]
    return {
        # (a user's folder is no named data set: the card's header lists none)
        "dataset": None if kind == "folder" else {"cifar10-jpeg": "cifar10"}.get(kind, kind),
        "data": recipe["data"],
        "data_description": folder_description(recipe["data"]) if kind == "folder"
        else DATA_DESCRIPTIONS.get(kind, recipe["data"]),
        "epochs": recipe["epochs"],
        "steps": step,
        "batch_size": recipe["batch_size"],
        "images_seen": step * recipe["batch_size"],
        "minutes": round(seconds / 60, 1),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "recipe": recipe,
        "final_pretext_metrics": pretext,
        "command": train_command(run_dir, recipe),
    }


def run_results(run_dir):
    from trainers.runs import read_eval
    report = read_eval(run_dir)
    if not report:
        return []
    # kNN: the k actually used (capped at the smallest class's train count) and the temperature, for the card
    return [{"protocol": protocol, "dataset": report["data"].split(":", 1)[0], "split": report["split_description"],
             "top1": report[protocol]["top1"], "command": report["command"],
             **{key: report[protocol][key] for key in ("k", "temperature") if key in report[protocol]}}
            for protocol in ("knn", "linear") if protocol in report]


def export_run(run_dir, name, to="published", overwrite=False, saved_model=True, compute_note=None,
               tflite=False, onnx=False, source=None, load_as=None, caveat=None):
    """Export the latest checkpoint of `run_dir` as `to/name`; returns the folder. `source`
    overrides metadata["source"] (e.g. the Hub repo it is published to); `caveat` is stored as
    metadata["caveat"], shown in the model card and warned about by zoo.load."""
    import zoo
    from export.saved_model import write_export
    from trainers.runs import run_encoder
    zoo.hub.check_name(name, "--name")
    recipe, method, encoder, step = run_encoder(run_dir)
    c = method.config
    backbone = {"name": c.backbone, "width": c.width, "stem": method.encoder_stem}
    input_spec = {"image_size": c.image_size, "dtype": "uint8 or float32", "value_range": [0, 255],
                  "mean": list(c.mean), "std": list(c.std)}
    training = run_training_info(run_dir, recipe, step)
    if compute_note:
        training["compute_note"] = compute_note
    results = run_results(run_dir)
    if user_folder(recipe["data"]) is not None:  # a user's own images: no paths of their machine in the card
        training, results = without_local_paths([training, results], run_dir, recipe["data"])
        folder_name = os.path.basename(os.path.normpath(user_folder(recipe["data"])))
        results = [dict(r, dataset=folder_name) for r in results]
        if load_as is None:  # the card's code loads the export by a relative path
            load_as = os.path.join(to if not os.path.isabs(to) else os.path.basename(os.path.normpath(to)), name)
    meta = zoo.hub.make_metadata(name, encoder, recipe["method"], backbone, input_spec, training=training, results=results)
    if source:
        meta["source"] = source
    if caveat:
        meta["caveat"] = caveat
    return write_export(encoder, meta, to, overwrite=overwrite, saved_model=saved_model, tflite=tflite, onnx=onnx,
                        load_as=load_as)


def export_preset(preset, name=None, to="published", overwrite=False, saved_model=True, compute_note=None,
                  tflite=False, onnx=False, source=None, load_as=None, caveat=None):
    """Export a registered encoder (zoo.list_models()) like a run: e.g. to add TFLite / ONNX
    files or to publish a shipped encoder on the Hub. Returns the folder."""
    import zoo
    from export.saved_model import write_export
    encoder = zoo.load(preset)
    meta = {k: v for k, v in zoo.hub.get_metadata(preset).items()
            if k not in ("files", "fingerprint", "exports", "source")}
    meta["name"] = name or preset
    zoo.hub.check_name(meta["name"], "--name")
    if compute_note:
        meta["training"] = dict(meta["training"], compute_note=compute_note)
    if caveat:
        meta["caveat"] = caveat
    meta["source"] = source or {"type": "folder", "path": "."}
    return write_export(encoder, meta, to, overwrite=overwrite, saved_model=saved_model, tflite=tflite, onnx=onnx,
                        load_as=load_as)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def parse_hub_target(target):
    """"hf://org/repo[@revision]" -> (repo_id, revision or None), refusing malformed ids
    before anything is trained, exported or sent."""
    repo = target[len("hf://"):] if target.startswith("hf://") else target
    repo_id, _, revision = repo.partition("@")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"--to {target!r}: expected hf://ORG/REPO or hf://ORG/REPO@REVISION "
                         "(e.g. hf://my-org/simclr_resnet18w025_cifar10).")
    return repo_id, revision or None


def hub_token():
    """The Hugging Face token: HF_TOKEN, else the one saved by `hf auth login`; a clear error
    before any network call when there is none."""
    from huggingface_hub import get_token
    token = get_token()
    if not token:
        raise ValueError("no Hugging Face token: set HF_TOKEN (a write token from "
                         "https://huggingface.co/settings/tokens) or run `hf auth login`.")
    return token


def publish_to_hub(folder, repo_id, revision=None, token=None):
    """Upload an export folder to the Hugging Face Hub (creating the repo, and the branch
    `revision` if given); returns the URL of what was uploaded."""
    from huggingface_hub import HfApi
    api = HfApi(token=token or hub_token())
    api.create_repo(repo_id, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision,
                      commit_message=f"Upload {os.path.basename(folder)} from keras-ssl-zoo")
    return f"https://huggingface.co/{repo_id}" + (f"/tree/{revision}" if revision else "")


ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")  # convert, check the graph, check the features


def _importable(name):
    import importlib
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def check_onnx_packages():
    """Before anything is converted: the packages --onnx needs, or a ValueError naming the
    missing ones and how to install them."""
    missing = [name for name in ONNX_PACKAGES if not _importable(name)]
    if missing:
        raise ValueError(f"--onnx needs tf2onnx and onnx to convert and onnxruntime to check the result; "
                         f"not installed: {', '.join(missing)}. Install them with pip install -e '.[onnx]' "
                         "(in a clone) or pip install 'keras-ssl-zoo[onnx]', or drop --onnx.")


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a zoo-train run folder, or a registered encoder name (zoo.list_models())")
    p.add_argument("--name", help="name of the exported encoder, e.g. simclr_resnet18w025_cifar10 "
                                  "(required for a run; default for a registered encoder: its name)")
    p.add_argument("--to", default="published",
                   help="local folder (default ./published) or hf://org/repo[@revision] (uploads; needs HF_TOKEN)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same name")
    p.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel (Keras files only)")
    p.add_argument("--compute-note", help="how the training minutes were measured (shown in the model card)")
    p.add_argument("--caveat", help="what a user must know before using the encoder (e.g. that it is no better "
                                    "than an untrained one on some probe); shown in the model card, warned at load")
    p.add_argument("--tflite", action="store_true",
                   help="also write model.tflite (Keras 3's LiteRT export, checked with the TFLite interpreter)")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx (tf2onnx, checked with onnxruntime; pip install 'keras-ssl-zoo[onnx]')")
    args = p.parse_args(argv)
    from export.saved_model import ExportError
    from trainers.errors import fail, user_errors
    if args.onnx:
        with user_errors():
            check_onnx_packages()
    formats = dict(saved_model=not args.no_saved_model, compute_note=args.compute_note, tflite=args.tflite,
                   onnx=args.onnx, caveat=args.caveat)
    import zoo
    if not os.path.isdir(args.run) and args.run in zoo.list_models():
        export = functools.partial(export_preset, args.run)
        args.name = args.name or args.run
    elif args.name is None:
        fail("--name is required when exporting a run (e.g. --name simclr_resnet18w025_cifar10)")
    else:
        export = functools.partial(export_run, args.run)
    with user_errors(ExportError):
        if args.to.startswith("hf://"):
            repo_id, revision = parse_hub_target(args.to)
            token = hub_token()
            target = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
            source = {"type": "huggingface", "repo_id": repo_id, "revision": revision or "main"}
            with tempfile.TemporaryDirectory() as tmp:
                folder = export(args.name, tmp, source=source, load_as=target, **formats)
                url = publish_to_hub(folder, repo_id, revision, token=token)
            print(f"published {args.name} to {url}")
            print(f"load it with: zoo.load({target!r})")
            return
        final = os.path.join(args.to, args.name)
        if os.path.exists(final) and not args.overwrite:  # before the run is loaded
            raise FileExistsError(f"{final} already exists; pass --overwrite to replace it, or choose another "
                                  "--name / --to.")
        folder = export(args.name, args.to, args.overwrite, **formats)
    print(f"exported {args.name} to {os.path.abspath(folder)}")
    print(f"load it with: zoo.load({os.path.abspath(folder)!r})")


if __name__ == "__main__":
    main()
