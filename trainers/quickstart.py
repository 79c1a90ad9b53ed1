"""`zoo-quickstart`: the whole zoo in a few minutes on the built-in `shapes` data (no files,
no network): train SimCLR, measure kNN accuracy on the held-out split (against the same
encoder at random initialisation), export the encoder, load it back by path, and check that
the loaded encoder gives the same features.
"""
import argparse
import os
import time


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/quickstart", help="folder for the run and the export")
    p.add_argument("--epochs", type=int, help="default: the recipe's (10)")
    p.add_argument("--width", type=float, help="default: the recipe's (0.25)")
    args = p.parse_args(argv)
    started = time.time()

    import numpy as np
    import zoo
    from export.cli import export_run
    from trainers import recipes
    from trainers.evaluate import evaluate
    from trainers.train import train

    run_dir = os.path.join(args.out, "simclr_shapes")
    recipe = recipes.load_recipe("simclr", os.path.join(recipes.CONFIG_DIR, "simclr_shapes.yaml"))
    if args.epochs:
        recipe["epochs"] = args.epochs
    if args.width:
        recipe["method_config"]["width"] = args.width
    print(f"[1/4] training SimCLR (ResNet-18, width {recipe['method_config']['width']}) on `shapes` for "
          f"{recipe['epochs']} epochs (recipe trainers/configs/simclr_shapes.yaml) -> {run_dir}")
    train(recipe, run_dir)

    print("[2/4] kNN accuracy on the held-out val split of `shapes`")
    report = evaluate(run_dir, protocols=("knn",), verbose=False)
    baseline = _random_init_knn(recipe)
    print(f"      kNN top-1 = {100 * report['knn']['top1']:.1f}% (same encoder at random init: "
          f"{100 * baseline:.1f}%, chance: 10%)")

    print("[3/4] exporting the encoder")
    import json
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(dict(report, command=f"zoo-eval {run_dir} --protocol knn"), f, indent=2)
    export_dir = export_run(run_dir, "simclr_resnet18_shapes", os.path.join(args.out, "published"), overwrite=True)

    print("[4/4] loading it back by path")
    encoder = zoo.load(export_dir)
    images = zoo.data.load_arrays("shapes", "val").images[:8]
    from trainers.runs import run_encoder
    reference = run_encoder(run_dir)[2](images).numpy()
    diff = float(np.max(np.abs(encoder(images).numpy() - reference)))
    print(f"      zoo.load({export_dir!r})(images) -> {tuple(encoder(images).shape)}, "
          f"max |difference| to the trained encoder = {diff:.2e}")

    print(f"\ndone in {(time.time() - started) / 60:.1f} min. Written:")
    print(f"  run folder   {os.path.abspath(run_dir)}  (config.yaml, train.log, metrics.jsonl, checkpoints/, tensorboard/)")
    print(f"  evaluation   {os.path.abspath(os.path.join(run_dir, 'eval.json'))}")
    print(f"  export       {os.path.abspath(export_dir)}  (model.weights.h5, saved_model/, README.md model card)")


def _random_init_knn(recipe):
    import keras
    import zoo
    from trainers.train import build_method
    from zoo.eval import extract_features, knn_accuracy
    keras.utils.set_random_seed(recipe["seed"])
    encoder = build_method(recipe).encoder
    train, val = zoo.data.load_arrays("shapes", "train"), zoo.data.load_arrays("shapes", "val")
    bank = extract_features(encoder, train.images, verbose=False)
    query = extract_features(encoder, val.images, verbose=False)
    return knn_accuracy(bank, train.labels, query, val.labels, train.num_classes)


if __name__ == "__main__":
    main()
