"""Time to accuracy of every shipped method: val kNN against images seen and against CPU-minutes
on a quiet machine.

The training runs shared the machine with other work, so their own epoch times do not compare
across methods. Instead, each method's training step is timed once, all methods in ONE process
run (`--measure`, same machine state), and a run's CPU-minutes are its steps x that step time:

    python benchmarks/time_to_accuracy.py --measure              # ~1 min per method; writes results/step_times_*.json
    python benchmarks/time_to_accuracy.py --step-times benchmarks/results/step_times_XXXX.json

The second command reads `runs/*_resnet18w025_cifar10/` (config.yaml, metrics.jsonl with the
per-epoch `val_knn_top1`, eval.json with the final kNN and linear probe) and the random-init
baseline (`results/random_init_cifar10.json`, the curves' point at 0 minutes), and writes a
markdown table and a PNG plot (needs matplotlib: `pip install matplotlib`).

"Learns most per CPU-minute" is read at fixed budgets (5, 15 and 30 CPU-minutes): the kNN of each
method there, interpolated linearly between its measured points, among the runs that reach the budget.
"""
import argparse
import datetime as _dt
import glob
import json
import os
import sys

import yaml

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
LABELLED = {"supcon", "triplet"}  # trained with the labels: not comparable as self-supervised


def measure_step_times(methods, width, batch_size, warmup, steps):
    """Median seconds of a training step (views made ahead of time) per method, one process."""
    sys.path.insert(0, BENCH_DIR)
    import keras
    import zoo
    from throughput import (compile_method, create_method, load_average, machine_facts, premade_views_dataset, timed_fit,
                            widest_simd)
    result = {"started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine_facts(), "load_average_start": load_average(), "width": width,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "step_seconds": {}}
    result["machine"]["widest_simd"] = widest_simd(result["machine"]["cpu_flags"])
    for name in methods:
        print(f"[{name}] timing {steps} steps at batch {batch_size} ...", flush=True)
        keras.utils.set_random_seed(0)
        method = create_method(name, width)
        compile_method(method, xla=False)
        timing = timed_fit(method, premade_views_dataset(method, batch_size), warmup, steps)
        result["step_seconds"][name] = timing["median_step_s"]
        print(f"[{name}] {timing['median_step_s']:.3f} s/step", flush=True)
        del method
        keras.backend.clear_session()
    result["load_average_end"] = load_average()
    return result


def run_curve(run_dir, step_seconds, bench_batch):
    """(method, points, final) of one run folder: points are (epoch, images seen, CPU-minutes,
    val kNN) for every epoch with a kNN, the last from eval.json."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    method, batch = config["method"], config["batch_size"]
    # a step's time grows with its batch: rescale the benchmark's step to the run's batch
    seconds = step_seconds[method] * batch / bench_batch
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    points = [(r["epoch"], r["step"] * batch, r["step"] * seconds / 60, r["val_knn_top1"])
              for r in rows if "val_knn_top1" in r]
    final = json.load(open(os.path.join(run_dir, "eval.json")))
    last = rows[-1]
    if not points or points[-1][0] != last["epoch"]:
        points.append((last["epoch"], final["step"] * batch, final["step"] * seconds / 60, final["knn"]["top1"]))
    return method, points, final


def interpolate(points, minutes):
    """kNN at `minutes` along the curve (linear between measured points), None past its end."""
    for (_, _, m0, k0), (_, _, m1, k1) in zip(points, points[1:]):
        if m0 <= minutes <= m1:
            return k0 + (k1 - k0) * (minutes - m0) / (m1 - m0)
    return None


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="time every method's step, write the JSON, stop")
    ap.add_argument("--methods", default="all", help="comma-separated, or all registered methods")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--step-times", help="JSON written by --measure")
    ap.add_argument("--budgets", default="5,15,30", help="CPU-minutes at which the curves are compared")
    ap.add_argument("--runs", default=os.path.join(ROOT, "runs", "*_resnet18w025_cifar10"))
    ap.add_argument("--baseline", default=os.path.join(BENCH_DIR, "results", "random_init_cifar10.json"))
    ap.add_argument("--out-md", default=os.path.join(BENCH_DIR, "results", "time_to_accuracy.md"))
    ap.add_argument("--plot", default=os.path.join(BENCH_DIR, "results", "time_to_accuracy.png"))
    args = ap.parse_args(argv)

    if args.measure:
        import zoo
        methods = zoo.list_methods() if args.methods == "all" else args.methods.split(",")
        result = measure_step_times(methods, args.width, args.batch_size, args.warmup, args.steps)
        stamp = result["started_utc"].replace("-", "").replace(":", "").replace(" ", "T")
        path = os.path.join(BENCH_DIR, "results", f"step_times_{stamp}Z.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print("wrote", path)
        return path
    if not args.step_times:
        ap.error("--step-times FILE (written by --measure) is needed to draw the curves")

    budgets = [float(b) for b in args.budgets.split(",")]
    bench = json.load(open(args.step_times))
    baseline = json.load(open(args.baseline))["runs"]
    random_knn = sum(r["knn_top1"] for r in baseline) / len(baseline)
    curves = {}
    for run_dir in sorted(glob.glob(args.runs)):
        if not os.path.exists(os.path.join(run_dir, "eval.json")):
            continue
        method, points, final = run_curve(run_dir, bench["step_seconds"], bench["batch_size"])
        curves[method] = ([(0, 0, 0.0, random_knn)] + points, final)

    lines = [
        "# Time to accuracy, CIFAR-10 (ResNet-18 width 0.25, 45k train images)",
        "",
        f"Step times: `{os.path.relpath(args.step_times, ROOT)}` ({bench['machine'].get('cpu_model', '?')}, "
        f"widest SIMD {bench['machine'].get('widest_simd', '?')}, batch {bench['batch_size']}, one process, "
        f"load {bench['load_average_start'][0]:.1f} at the start). CPU-minutes = steps x that step time "
        "(the runs' own epoch times are not comparable: they shared the machine). kNN: val split, 5,000 "
        f"images held out of the train set; 0 minutes = the untrained encoder (mean of 3 seeds, {100 * random_knn:.1f} %). "
        "kNN at a budget is interpolated linearly between measured epochs; '-' where the run ended before it.",
        "",
        "| method | labels | s/step | CPU-min / epoch | epochs | CPU-min | images seen | val kNN curve (epoch: %) "
        "| final kNN | linear | " + " | ".join(f"kNN at {b:g} CPU-min" for b in budgets) + " |",
        "| --- " * (10 + len(budgets)) + "|",
    ]
    for method, (points, final) in sorted(curves.items()):
        epoch, images, minutes, knn = points[-1]
        curve = ", ".join(f"{e}: {100 * k:.1f}" for e, _, _, k in points[1:])
        linear = final.get("linear", {}).get("top1")
        at_budgets = " | ".join(_percent(interpolate(points, b)) for b in budgets)
        lines.append(f"| {method} | {'yes' if method in LABELLED else 'no'} | {bench['step_seconds'][method]:.2f} "
                     f"| {minutes / epoch:.1f} | {epoch} | {minutes:.0f} | {images:,} | {curve} | {100 * knn:.1f} "
                     f"| {_percent(linear)} | {at_budgets} |")
    lines.append("")
    label_free = sum(method not in LABELLED for method in curves)
    for budget in budgets:
        ranked = sorted(((interpolate(points, budget), method) for method, (points, _) in curves.items()
                         if method not in LABELLED and interpolate(points, budget) is not None), reverse=True)
        if ranked:
            lines.append(f"- Label-free, kNN at {budget:g} CPU-minutes ({len(ranked)} of {label_free} runs reach it): "
                         + ", ".join(f"{'**' + m + '**' if i == 0 else m} ({100 * k:.1f} %)"
                                     for i, (k, m) in enumerate(ranked[:5])) + ".")
    with open(args.out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: the default cycle repeats after 10
    for i, (method, (points, _)) in enumerate(sorted(curves.items())):
        style = "--" if method in LABELLED else "-"
        for ax, x in zip(axes, (1, 2)):
            ax.plot([p[x] / (1e3 if x == 1 else 1) for p in points], [100 * p[3] for p in points], style,
                    color=colours[i % 20], marker="os^D"[i // 20 % 4], markersize=3, label=method)
    axes[0].set_xlabel("images seen (thousands)")
    axes[1].set_xlabel(f"CPU-minutes on a quiet machine ({bench['machine'].get('widest_simd', '?')})")
    for ax in axes:
        ax.set_ylabel("val kNN top-1 (%)")
        ax.axhline(100 * random_knn, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2, loc="lower right")
    fig.suptitle("CIFAR-10, ResNet-18 width 0.25: val kNN while training (dashed: uses labels; grey: untrained)")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print("wrote", args.out_md, args.plot)


if __name__ == "__main__":
    main()
