"""`zoo-export RUN --name NAME [--to DIR | --to hf://org/repo]`: freeze a run's encoder.

Writes the export folder (see export/saved_model.py) into the local store DIR (default
./published); with `--to hf://org/repo` it writes it to a temporary folder and uploads it to
the Hugging Face Hub (token from HF_TOKEN or `huggingface-cli login`).
"""
import argparse
import json
import os
import re
import tempfile

DATA_DESCRIPTIONS = {
    "cifar10-jpeg": "CIFAR-10 training images as JPEGs: the 45,000-image train split (500 per class held "
                    "out as val, seed 0)",
    "shapes": "the generated `shapes` data set (train split)",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def run_training_info(run_dir, recipe, step):
    seconds = 0.0
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            seconds = sum(json.loads(line).get("epoch_seconds", 0.0) for line in f if line.strip())
    from export.saved_model import cpu_model
    kind = recipe["data"].split(":", 1)[0]
    return {
        "dataset": {"cifar10-jpeg": "cifar10"}.get(kind, kind),
        "data": recipe["data"],
        "data_description": DATA_DESCRIPTIONS.get(kind, recipe["data"]),
        "epochs": recipe["epochs"],
        "steps": step,
        "batch_size": recipe["batch_size"],
        "images_seen": step * recipe["batch_size"],
        "minutes": round(seconds / 60, 1),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "recipe": recipe,
        "command": f"zoo-train {recipe['method']} --config trainers/configs/{recipe['method']}_cifar10.yaml "
                   f"--out {run_dir}" if kind == "cifar10-jpeg" else
                   f"zoo-train {recipe['method']} --data {recipe['data']} --epochs {recipe['epochs']} --out {run_dir}",
    }


def run_results(run_dir):
    from trainers.runs import read_eval
    report = read_eval(run_dir)
    if not report:
        return []
    return [{"protocol": protocol, "dataset": report["data"].split(":", 1)[0], "split": report["split_description"],
             "top1": report[protocol]["top1"], "command": report["command"]}
            for protocol in ("knn", "linear") if protocol in report]


def export_run(run_dir, name, to="published", overwrite=False, saved_model=True, compute_note=None):
    """Export the latest checkpoint of `run_dir` as `to/name`; returns the folder."""
    from export.saved_model import make_metadata, write_export
    from trainers.runs import run_encoder
    if not _NAME.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '_', '-', '.' (e.g. simclr_resnet18w025_cifar10).")
    recipe, method, encoder, step = run_encoder(run_dir)
    c = method.config
    backbone = {"name": c.backbone, "width": c.width, "stem": method.encoder_stem}
    input_spec = {"image_size": c.image_size, "dtype": "uint8 or float32", "value_range": [0, 255],
                  "mean": list(c.mean), "std": list(c.std)}
    training = run_training_info(run_dir, recipe, step)
    if compute_note:
        training["compute_note"] = compute_note
    meta = make_metadata(name, encoder, recipe["method"], backbone, input_spec,
                         training=training, results=run_results(run_dir))
    return write_export(encoder, meta, to, overwrite=overwrite, saved_model=saved_model)


def publish_to_hub(folder, repo):
    """Upload an export folder to the Hugging Face Hub; returns the repo URL."""
    from huggingface_hub import HfApi
    repo_id, _, revision = repo.partition("@")
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision or None,
                      commit_message=f"Upload {os.path.basename(folder)} from keras-ssl-zoo")
    return f"https://huggingface.co/{repo_id}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a zoo-train run folder")
    p.add_argument("--name", required=True, help="name of the exported encoder, e.g. simclr_resnet18w025_cifar10")
    p.add_argument("--to", default="published", help="local folder (default ./published) or hf://org/repo")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same name")
    p.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel (Keras files only)")
    p.add_argument("--compute-note", help="how the training minutes were measured (shown in the model card)")
    args = p.parse_args(argv)
    from trainers.runs import RunError
    try:
        if args.to.startswith("hf://"):
            with tempfile.TemporaryDirectory() as tmp:
                folder = export_run(args.run, args.name, tmp, saved_model=not args.no_saved_model,
                                    compute_note=args.compute_note)
                print(f"published {publish_to_hub(folder, args.to[len('hf://'):])}")
            return
        folder = export_run(args.run, args.name, args.to, args.overwrite, saved_model=not args.no_saved_model,
                            compute_note=args.compute_note)
    except (RunError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(f"exported {args.name} to {os.path.abspath(folder)}")
    print(f"load it with: zoo.load({os.path.abspath(folder)!r})")


if __name__ == "__main__":
    main()
