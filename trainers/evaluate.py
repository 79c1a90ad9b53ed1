"""`zoo-eval TARGET --data SPEC --protocol knn,linear,cluster`: measure a representation.

TARGET is a zoo-train run folder (its latest checkpoint), a registered model name or an export
folder. Features of the train split (the kNN bank / probe training set) and of the val split
are extracted from the frozen encoder (and cached in the run folder), then:
  knn     weighted kNN top-1 on val (k=200, capped at the smallest class's train count; cosine,
          temperature 0.1; Wu et al. 2018)
  linear  linear-probe top-1 on val (softmax regression on standardised frozen features)
  cluster k-means on the L2-normalised val features with k = the number of classes (n_init 10,
          seed 0): NMI, ARI and Hungarian-matched accuracy against the val labels (no train
          features needed; not in the default --protocol knn,linear)
Results are printed and written as JSON (default: RUN/eval.json; RUN/eval-cluster.json for the
cluster protocol alone, so that it never replaces the knn / linear report the model card reads).
`--layer stage2` measures the average-pooled output of an intermediate block instead of the
final features (per-layer probes; the default output file is then RUN/eval-stage2.json).
"""
import argparse
import json
import os
import shlex
import sys
import time

PROTOCOLS = ("knn", "linear", "cluster")
DEFAULT_PROTOCOLS = ("knn", "linear")
TRAIN_PROTOCOLS = ("knn", "linear")  # the protocols that need the train split's features


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
             layer=None):
    """Evaluate `target` (its block `layer`, e.g. "stage2", if given); returns the report dict."""
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
    encoder, info, cache_dir, key, recipe = _encoder_for(target)
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
    splits = (("train", train), ("val", val)) if any(p in TRAIN_PROTOCOLS for p in protocols) else (("val", val),)
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
                  train_images=len(train), val_images=len(val), feature_dim=int(feats["val"].shape[1]),
                  feature_seconds=round(time.time() - started, 1))
    if "knn" in protocols:
        report["knn"] = knn_evaluate(feats["train"], train.labels, feats["val"], val.labels, train.num_classes,
                                     k=k, temperature=temperature)
    if "linear" in protocols:
        report["linear"] = linear_probe(feats["train"], train.labels, feats["val"], val.labels, train.num_classes)
    if "cluster" in protocols:
        report["cluster"] = cluster_evaluate(feats["val"], val.labels, train.num_classes)
    return report


def write_report(report, command, out=None):
    """Record the command in the report and write it as JSON (default: RUN/eval.json, which
    zoo-export reads into the model card, RUN/eval-cluster.json for the cluster protocol alone,
    RUN/eval-LAYER.json for a block; eval.json for a model). Returns the path."""
    report["command"] = command
    # A cluster-only report goes beside eval.json, not over it: the knn / linear numbers there
    # feed the model card.
    cluster_only = "cluster" in report and not ({"knn", "linear"} & set(report))
    name = "eval" + (f"-{report['layer']}" if report.get("layer") else "") + ("-cluster" if cluster_only else "") + ".json"
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="zoo-train run folder, registered model name, or export folder")
    p.add_argument("--data", help="data spec or image folder path (default: the run's training data)")
    p.add_argument("--protocol", default=",".join(DEFAULT_PROTOCOLS),
                   help=f"comma-separated, of {','.join(PROTOCOLS)} (default: %(default)s)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--layer", help="probe an intermediate block instead: stem, stage1, stage2, stage3 or stage4")
    p.add_argument("--out", help="JSON file (default: RUN/eval.json, or eval.json for a model)")
    args = p.parse_args(argv)
    from trainers.errors import user_errors
    with user_errors():
        report = evaluate(args.target, args.data, [s.strip() for s in args.protocol.split(",") if s.strip()],
                          k=args.k, temperature=args.temperature, batch_size=args.batch_size, layer=args.layer)
        command = "zoo-eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        out = write_report(report, command, args.out)
    where = f" [{report['layer']}]" if report.get("layer") else ""
    print(f"{report.get('run') or report.get('model')}{where} on {report['data']} ({report['split_description']}):")
    for protocol in ("knn", "linear"):
        if protocol in report:
            print(f"  {protocol:7s} top-1 = {100 * report[protocol]['top1']:.2f}%{_k_note(report[protocol])}")
    if "cluster" in report:
        c = report["cluster"]
        print(f"  cluster k={c['k']}: accuracy (Hungarian) = {100 * c['accuracy']:.2f}%, NMI = {c['nmi']:.4f}, "
              f"ARI = {c['ari']:.4f}")
    print(f"wrote {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
