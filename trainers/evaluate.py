"""`zoo-eval TARGET --data SPEC --protocol knn,linear,mlp,cluster,finetune`: measure a representation.

TARGET is a zoo-train run folder (its latest checkpoint), a registered model name or an export
folder. Features of the train split (the kNN bank / probe training set) and of the val split
are extracted from the frozen encoder (and cached in the run folder), then:
  knn     weighted kNN top-1 on val (k=200, capped at the smallest class's train count; cosine,
          temperature 0.1; Wu et al. 2018)
  linear  linear-probe top-1 on val (softmax regression on standardised frozen features)
  mlp     MLP-probe top-1 on val (one hidden layer of 512 ReLU units on the same standardised
          features; zoo.eval.mlp)
  cluster k-means on the L2-normalised val features with k = the number of classes (n_init 10,
          seed 0): NMI, ARI and Hungarian-matched accuracy against the val labels (no train
          features needed)
  finetune the whole network (encoder + a linear head) fine-tuned on class-balanced subsets of
          the train labels (--label-fractions, default 1 % and 10 %; the same images for every
          encoder: they depend on the labels, fraction and seed 0 only), against the same
          network from random init on the same subsets; val top-1 of both and the gain
          (zoo.eval.finetune_probe; no cached features, it trains on the images)
The default is --protocol knn,linear. Results are printed and written as JSON (default:
RUN/eval.json, which the model card reads). A report with neither knn nor linear never replaces
it: it goes to RUN/eval-PROTOCOLS.json instead (eval-cluster.json, eval-mlp.json,
eval-finetune.json, eval-mlp-finetune.json, ...).
`--layer stage2` measures the average-pooled output of an intermediate block instead of the
final features (per-layer probes; the default output file is then RUN/eval-stage2.json).
"""
import argparse
import json
import os
import shlex
import sys
import time

PROTOCOLS = ("knn", "linear", "mlp", "cluster", "finetune")
DEFAULT_PROTOCOLS = ("knn", "linear")
CARD_PROTOCOLS = ("knn", "linear")  # the model card reads these from RUN/eval.json
TRAIN_PROTOCOLS = ("knn", "linear", "mlp")  # the protocols that need the train split's features
FEATURE_PROTOCOLS = TRAIN_PROTOCOLS + ("cluster",)  # the protocols on frozen (cached) features


def split_description(spec, n_val):
    kind = spec.split(":", 1)[0]
    if kind == "cifar10-jpeg":
        return f"val: {n_val:,} images held out of the CIFAR-10 train set (500/class, seed 0)"
    return f"val split of {spec} ({n_val:,} images)"


def _encoder_for(target):
    """(ImageEncoder, description dict, feature cache dir or None, cache key, recipe or None)."""
    from trainers.runs import run_encoder
    if os.path.exists(os.path.join(target, "config.yaml")):
        recipe, _, encoder, step = run_encoder(target)
        return encoder, {"run": target, "step": step, "method": recipe["method"]}, \
            os.path.join(target, "features"), f"step-{step}", recipe
    import zoo
    encoder = zoo.load(target)
    meta = encoder.metadata
    key = next(iter(meta["files"].values()))["sha256"]
    return encoder, {"model": target, "method": meta["method"]}, None, key, None


def evaluate(target, data=None, protocols=DEFAULT_PROTOCOLS, k=200, temperature=0.1, batch_size=512, verbose=True,
             layer=None, label_fractions=None, finetune_steps=300):
    """Evaluate `target` (its block `layer`, e.g. "stage2", if given); returns the report dict.
    `label_fractions` and `finetune_steps` configure the finetune protocol (default fractions:
    zoo.eval.finetune_probe.DEFAULT_FRACTIONS, 1 % and 10 %)."""
    import numpy as np
    import tensorflow as tf
    import zoo
    from trainers.recipes import resolve_data
    from zoo.eval import cluster_evaluate, extract_features, knn_evaluate, linear_probe
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be 1 or more.")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"Unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}.")
    if layer and "finetune" in protocols:
        raise ValueError(f"--layer {layer} applies to the frozen-feature protocols ({', '.join(FEATURE_PROTOCOLS)}); "
                         "the finetune protocol trains the whole network: run it without --layer.")
    encoder, info, cache_dir, key, recipe = _encoder_for(target)
    full_encoder = encoder
    if layer:
        from zoo.encoder import layer_encoder
        encoder = layer_encoder(encoder, layer)
        info["layer"], key = layer, f"{key}-{layer}"
    if data is None:
        if recipe is None:
            raise ValueError("--data is required when evaluating a model (not a run folder).")
        data = recipe["data"]
    data = resolve_data(data)  # a plain folder path, as zoo-train takes it; a missing one is "not found"
    train, val = zoo.data.load_arrays(data, "train"), zoo.data.load_arrays(data, "val")
    if len(val) == 0:
        raise ValueError(f"{data} has an empty val split; nothing to evaluate on.")
    if train.num_classes < 2:
        from trainers.train import one_class_warning
        print(one_class_warning(data, train.class_names, measured="every top-1 accuracy (knn, linear, cluster) is",
                                alternative=""), file=sys.stderr)
    as_float = lambda x: tf.cast(x, tf.float32)  # noqa: E731  (the encoder does its own scaling)
    feats = {}
    started = time.time()
    splits = ((("train", train), ("val", val)) if any(p in TRAIN_PROTOCOLS for p in protocols)
              else (("val", val),) if "cluster" in protocols else ())
    for split, arrays in splits:
        cache = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            cache = os.path.join(cache_dir, f"{split}-{data.split(':')[0]}-{key}.npz")
        feats[split] = extract_features(encoder, arrays.images, batch_size=batch_size, cache_path=cache,
                                        cache_key=f"{key}:{data}", preprocess=as_float, verbose=verbose)
        bad = int(np.sum(~np.all(np.isfinite(feats[split]), axis=1)))
        if bad:
            raise ValueError(f"{target}: the encoder gives NaN or inf features for {bad} of the {len(arrays)} "
                             f"{split} images of {data}; its weights are broken (a diverged run?), nothing to "
                             "evaluate.")
    report = dict(info, data=data, split="val", split_description=split_description(data, len(val)),
                  train_images=len(train), val_images=len(val))
    if feats:
        report.update(feature_dim=int(feats["val"].shape[1]), feature_seconds=round(time.time() - started, 1))
    if "knn" in protocols:
        report["knn"] = knn_evaluate(feats["train"], train.labels, feats["val"], val.labels, train.num_classes,
                                     k=k, temperature=temperature)
    if "linear" in protocols:
        report["linear"] = linear_probe(feats["train"], train.labels, feats["val"], val.labels, train.num_classes)
    if "mlp" in protocols:
        from zoo.eval.mlp import mlp_probe
        report["mlp"] = mlp_probe(feats["train"], train.labels, feats["val"], val.labels, train.num_classes)
    if "cluster" in protocols:
        report["cluster"] = cluster_evaluate(feats["val"], val.labels, train.num_classes)
    if "finetune" in protocols:
        from zoo.eval.finetune_probe import DEFAULT_FRACTIONS, finetune_evaluate
        report["finetune"] = finetune_evaluate(full_encoder, train.images, train.labels, val.images, val.labels,
                                               train.num_classes, fractions=label_fractions or DEFAULT_FRACTIONS,
                                               steps=finetune_steps, verbose=verbose)
    return report


def write_report(report, command, out=None):
    """Record the command in the report and write it as JSON (default: RUN/eval.json, which
    zoo-export reads into the model card; without knn and linear RUN/eval-PROTOCOLS.json, e.g.
    eval-cluster.json, eval-mlp-finetune.json; RUN/eval-LAYER[-PROTOCOLS].json for a block;
    eval[-PROTOCOLS].json for a model). Returns the path."""
    report["command"] = command
    # A report without knn and linear goes beside eval.json, not over it: the knn / linear
    # numbers there feed the model card.
    others = [] if set(CARD_PROTOCOLS) & set(report) else [p for p in PROTOCOLS if p in report]
    name = "eval" + (f"-{report['layer']}" if report.get("layer") else "") + "".join(f"-{p}" for p in others) + ".json"
    out = out or (os.path.join(report["run"], name) if "run" in report else name)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    return out


def _k_note(result):
    """" (k=12: ...)" when the kNN evaluation used fewer neighbours than requested, else ""."""
    if "k_requested" not in result or result["k"] == result["k_requested"]:
        return ""
    return (f" (k={result['k']}, not the --k {result['k_requested']} requested: the smallest class has "
            f"{result['smallest_class']} train images)")


def parse_fractions(text):
    """"0.01,0.1" -> [0.01, 0.1]; a clear error for anything else."""
    try:
        fractions = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fractions = []
    if not fractions or any(not 0 < f <= 1 for f in fractions) or len(set(fractions)) != len(fractions):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct fractions in (0, 1] separated by commas, "
                                         "e.g. 0.01,0.1 for 1 % and 10 % of the labels")
    return fractions


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="zoo-train run folder, registered model name, or export folder")
    p.add_argument("--data", help="data spec or image folder path (default: the run's training data)")
    p.add_argument("--protocol", default=",".join(DEFAULT_PROTOCOLS),
                   help=f"comma-separated, of {','.join(PROTOCOLS)} (default: %(default)s)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--layer", help="probe an intermediate block instead: stem, stage1, stage2, stage3 or "
                                   "stage4 (a ViT: block1..blockK)")
    p.add_argument("--label-fractions", type=parse_fractions, default=None,
                   help="finetune: fractions of the train labels, class-balanced (default: 0.01,0.1)")
    p.add_argument("--finetune-steps", type=int, default=300,
                   help="finetune: optimizer steps of 64 images per run (default: %(default)s)")
    p.add_argument("--out", help="JSON file (default: RUN/eval.json, or eval.json for a model; without knn and linear "
                                 "RUN/eval-PROTOCOLS.json, e.g. RUN/eval-finetune.json)")
    args = p.parse_args(argv)
    from trainers.errors import user_errors
    with user_errors():
        report = evaluate(args.target, args.data, [s.strip() for s in args.protocol.split(",") if s.strip()],
                          k=args.k, temperature=args.temperature, batch_size=args.batch_size, layer=args.layer,
                          label_fractions=args.label_fractions, finetune_steps=args.finetune_steps)
        command = "zoo-eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        out = write_report(report, command, args.out)
    where = f" [{report['layer']}]" if report.get("layer") else ""
    print(f"{report.get('run') or report.get('model')}{where} on {report['data']} ({report['split_description']}):")
    for protocol in ("knn", "linear", "mlp"):
        if protocol in report:
            print(f"  {protocol:7s} top-1 = {100 * report[protocol]['top1']:.2f}%{_k_note(report[protocol])}")
    if "cluster" in report:
        c = report["cluster"]
        print(f"  cluster k={c['k']}: accuracy (Hungarian) = {100 * c['accuracy']:.2f}%, NMI = {c['nmi']:.4f}, "
              f"ARI = {c['ari']:.4f}")
    for entry in report.get("finetune", {}).get("subsets", []):
        encoder, random_init = 100 * entry["encoder"]["top1"], 100 * entry["random_init"]["top1"]
        print(f"  finetune {100 * entry['fraction']:g}% of the labels ({entry['labelled_images']:,} images): "
              f"top-1 = {encoder:.2f}%, from random init {random_init:.2f}% (gain {100 * entry['gain']:+.2f} points)")
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
