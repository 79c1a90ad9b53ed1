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
    p.add_argument("--epochs", type=int, help="default: the recipe's (5)")
    p.add_argument("--width", type=float, help="default: the recipe's (0.125)")
    p.add_argument("--data", help="default: the recipe's (`shapes`: 6,000 generated images); e.g. "
                                  "`shapes?n=1200` for a faster run")
    args = p.parse_args(argv)
    started = time.time()
    from trainers.errors import user_errors
    with user_errors():  # a bad --data, --epochs or --width: one `error:` line, exit status 2
        import keras
        import numpy as np
        import zoo
        from export.cli import export_run
        from trainers import recipes
        from trainers.evaluate import evaluate, write_report
        from trainers.runs import run_encoder
        from trainers.train import build_method, train
        from zoo.eval import encoder_knn_accuracy

        run_dir = os.path.join(args.out, "simclr_shapes")
        recipe = recipes.load_recipe("simclr", os.path.join(recipes.CONFIG_DIR, "simclr_shapes.yaml"))
        if args.epochs is not None:  # `--epochs 0` is refused by check_recipe, not read as "the default"
            recipe["epochs"] = args.epochs
        if args.width is not None:
            recipe["method_config"]["width"] = args.width
        if args.data is not None:
            recipe["data"] = args.data
        recipes.check_recipe(recipe)  # a bad flag is one error line before anything is trained
        print(f"[1/4] training SimCLR (ResNet-18, width {recipe['method_config']['width']}) on `{recipe['data']}` for "
              f"{recipe['epochs']} epochs (recipe trainers/configs/simclr_shapes.yaml) -> {run_dir}")
        train(recipe, run_dir)

        print(f"[2/4] kNN accuracy on the held-out val split of `{recipe['data']}`")
        report = evaluate(run_dir, protocols=("knn",), verbose=False)
        eval_path = write_report(report, f"zoo-eval {run_dir} --protocol knn")
        train_data = zoo.data.load_arrays(recipe["data"], "train")
        val_data = zoo.data.load_arrays(recipe["data"], "val")
        keras.utils.set_random_seed(recipe["seed"])  # the initial weights of the trained run
        baseline = encoder_knn_accuracy(build_method(recipe).encoder, train_data.images, train_data.labels,
                                        val_data.images, val_data.labels, train_data.num_classes)
        print(f"      kNN top-1 = {100 * report['knn']['top1']:.1f}% (same encoder at random init: "
              f"{100 * baseline:.1f}%, chance: 10%)")

        print("[3/4] exporting the encoder")
        export_dir = export_run(run_dir, "simclr_resnet18_shapes", os.path.join(args.out, "published"), overwrite=True)

        print("[4/4] loading it back by path")
        images = val_data.images[:8]
        features = zoo.load(export_dir)(images).numpy()
        diff = float(np.max(np.abs(features - run_encoder(run_dir)[2](images).numpy())))
        print(f"      zoo.load({export_dir!r})(images) -> {features.shape}, "
              f"max |difference| to the trained encoder = {diff:.2e}")

        print(f"\ndone in {(time.time() - started) / 60:.1f} min. Written:")
        print(f"  run folder   {os.path.abspath(run_dir)}  "
              "(config.yaml, train.log, metrics.jsonl, checkpoints/, tensorboard/)")
        print(f"  evaluation   {os.path.abspath(eval_path)}")
        print(f"  export       {os.path.abspath(export_dir)}  (model.weights.h5, saved_model/, README.md model card)")


if __name__ == "__main__":
    main()
