"""Training throughput of the zoo's pretext steps, measured against the machine and a peer.

Run from the repository root (a quiet machine; takes ~3-4 minutes at the defaults on 2 cores):

    python benchmarks/throughput.py                      # width 0.25, batch 128, XLA off and on, peer
    python benchmarks/throughput.py --xla off --peer 0 --methods simclr --tag quick

Everything is measured in ONE process run, so all numbers share the same machine state:

1. machine facts: CPU model, cores, the SIMD/AMX flags that matter, TF/Keras versions, and the
   float32 `tf.matmul` peak (GFLOP/s, best of a few 2048x2048 products, at the start and the
   end of the run: a big gap between the two means the machine was busy);
2. `step`: the zoo's training step (`zoo.create(method, backbone="resnet18", width=W)`,
   SGD momentum 0.9 from `zoo.optimizers.make_optimizer`) fed with views made ONCE ahead of
   time and repeated, so only the step is timed; with `jit_compile` off and/or on (XLA);
3. `make_views`: the tf.data view-making rate (`zoo.pipeline.pretext_dataset` over random
   uint8 32x32 images, batches of 256, using all cores) with no training step;
4. `end_to_end`: `fit` on `zoo.pipeline.pretext_dataset`, views made on the fly as real
   training does, so augmentation competes with the step for the cores;
5. `peer`: `../shared/peer-bench/bench_keras.py` (a plain Keras 3 SimCLR step, the floor the
   zoo must beat) in a subprocess, same width/batch/steps, `--mode concat` (one forward pass
   over the 2N concatenated views, as the zoo's SimCLR does), `--jit 0` (and `--jit 1` when
   XLA rows are measured).

How to read the table (one row per measurement):

    method       simclr | rotation | peer (bench_keras.py)
    measure      step | make_views | end_to_end
    xla          jit_compile of the step (off is what zoo training uses on CPU; "-" for tf.data)
    views/s      network inputs per second: SimCLR makes 2 views per image, RotNet 4 rotations;
                 this is the number to compare across methods and with the peer (whose
                 "imgs/s" also counts both views)
    images/s     source images per second (= views/s / views per image)
    step ms      median interval between successive training steps after warm-up
                 (for make_views: milliseconds per tf.data batch)
    GFLOP/s      achieved: analytic FLOPs of a step / median step time. FLOPs = 3 x forward
                 (forward + backward) x 2 x MACs of every Conv/Dense layer of the encoder and
                 the heads, per view; BN, ReLU, adds, pooling and the loss are not counted
    %peak        GFLOP/s / the float32 matmul peak measured in this run
    vs peer      views/s / the peer's views/s at the same XLA setting (SimCLR rows only;
                 > 1 means the zoo is faster). For end_to_end the zoo pays for augmentation
                 and the peer does not, which is the comparison DESIGN.md asks to win.

Numbers are comparable only within one run on one machine (machines here differ up to 5x).
Each run writes a timestamped JSON file in --out (everything measured, incl. raw step times)
and appends one markdown line per measurement to benchmarks/RESULTS.md (--results-md).
"""
import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/throughput.py` without an installed zoo
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import zoo  # noqa: E402
from zoo.optimizers import make_optimizer  # noqa: E402
from zoo.pipeline import pretext_dataset, steps_per_epoch  # noqa: E402

#: CPU flags that decide conv/matmul speed on x86 (AMX is Sapphire Rapids and later).
CPU_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
#: Network inputs per source image of each method's pretext batch.
VIEWS_PER_IMAGE = {"simclr": 2, "rotation": 4}
PEER_SCRIPT = "bench_keras.py"
PEER_MODE = "concat"  # one forward over the 2N concatenated views = zoo SimCLR.pretext_loss
DEFAULT_PEER_DIR = REPO_ROOT.parent / "shared" / "peer-bench"

MD_HEADER = """# Throughput results

Written by `benchmarks/throughput.py` (see `benchmarks/README.md`); one line per measurement.
Compare numbers only within one run (same `run` stamp) on one machine: machines here differ
up to 5x, and a busy machine (high `load`) makes every number noisy.

Columns: `run` start time (UTC) and `tag`; `machine`: CPU model, cores, widest SIMD; `load`:
1-minute load average at the start; `peak`: float32 matmul GFLOP/s measured in the same run;
`w`/`b`: backbone width and batch (source images); `method`; `measure`: `step` (pre-made
views, step only), `make_views` (tf.data views only), `end_to_end` (fit with views made on
the fly); `xla`: jit_compile of the step; `views/s`: network inputs per second (SimCLR 2 and
RotNet 4 per image); `img/s`: source images per second; `ms`: median step (or tf.data batch)
time; `GFLOP/s` achieved (analytic conv/dense FLOPs, forward+backward = 3x forward) and
`%peak` of the matmul peak; `vs peer`: views/s over the plain-Keras peer's views/s
(`peer-bench/bench_keras.py --mode concat`, same XLA setting; >1 = zoo faster).

| run | tag | machine | load | peak GFLOP/s | w | b | method | measure | xla | views/s | img/s | ms | GFLOP/s | %peak | vs peer |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""


# ----------------------------------------------------------------------------- machine facts
def cpu_info():
    """CPU model, logical cores (total and usable by this process), cgroup quota, flags."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else model
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(m.group(1).split()) if m else set()
    except OSError:
        pass
    quota = None
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = None if q == "max" else float(q) / float(period)
    except (OSError, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "cgroup_cpu_quota": quota,
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
    }


def widest_simd(flags):
    for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if flags.get(f):
            return f
    return "sse"


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_facts():
    return {
        **cpu_info(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def matmul_peak(n=2048, reps=5):
    """Best-of-`reps` GFLOP/s of a float32 n x n x n tf.matmul (2 n^3 FLOPs), after a warm-up."""
    a = tf.random.stateless_normal((n, n), seed=[1, 2])
    b = tf.random.stateless_normal((n, n), seed=[3, 4])
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)), autograph=False)  # scalar: cheap sync
    product(a, b).numpy()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        product(a, b).numpy()
        times.append(time.perf_counter() - t0)
    return {"n": n, "reps": reps, "times_s": times, "gflops": 2.0 * n ** 3 / min(times) / 1e9}


# ------------------------------------------------------------------------ analytic FLOP count
def layer_macs(layer, input_shape, output_shape):
    """Multiply-accumulates of ONE sample through a Conv/Dense layer, from its shapes (without
    the batch axis); 0 for other layers (BN, activations, adds, pooling: elementwise)."""
    L = keras.layers
    if isinstance(layer, L.DepthwiseConv2D):
        return math.prod(output_shape[:-1]) * math.prod(layer.kernel_size) * output_shape[-1]
    if isinstance(layer, L.SeparableConv2D):
        depthwise = math.prod(output_shape[:-1]) * math.prod(layer.kernel_size) * input_shape[-1] * layer.depth_multiplier
        return depthwise + math.prod(output_shape[:-1]) * input_shape[-1] * layer.depth_multiplier * layer.filters
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return math.prod(input_shape[:-1]) * math.prod(layer.kernel_size) * input_shape[-1] * layer.filters
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        groups = getattr(layer, "groups", 1)
        return math.prod(output_shape[:-1]) * math.prod(layer.kernel_size) * (input_shape[-1] // groups) * layer.filters
    if isinstance(layer, L.Dense):
        return math.prod(input_shape[:-1]) * input_shape[-1] * layer.units
    return 0


def _concrete(shape):
    return shape is not None and all(d is not None for d in shape)


def count_macs(model, input_shape=None):
    """Forward multiply-accumulates per sample of a Keras layer or functional/Sequential model
    for inputs of `input_shape` (no batch axis; default: the model's own input shape).

    A model with unknown spatial sizes (e.g. an encoder built for any image size) is cloned
    on a concrete input so that every layer's output shape is known; nested models are
    counted recursively. Layers called more than once are counted once (none in the zoo)."""
    if input_shape is None:
        input_shape = tuple(model.input.shape[1:]) if isinstance(model, keras.Model) else None
    input_shape = tuple(input_shape)
    if not isinstance(model, keras.Model):
        output_shape = tuple(model.compute_output_shape((1,) + input_shape)[1:])
        return layer_macs(model, input_shape, output_shape)
    if tuple(model.input.shape[1:]) != input_shape:
        model = keras.models.clone_model(model, input_tensors=keras.Input(input_shape))
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_shape = getattr(layer.input, "shape", None)
        in_shape = tuple(in_shape[1:]) if in_shape is not None else None
        if isinstance(layer, keras.Model):
            total += count_macs(layer, in_shape) if _concrete(in_shape) else count_macs(layer)
            continue
        out_shape = getattr(layer.output, "shape", None)
        if _concrete(in_shape) and out_shape is not None and _concrete(out_shape[1:]):
            total += layer_macs(layer, in_shape, tuple(out_shape[1:]))
    return total


def method_macs_per_view(method):
    """Forward MACs per view: the encoder on image_size x image_size x 3, plus every head
    (sub-models of the method other than the encoder, on their own input shapes)."""
    s = method.config.image_size
    encoder = count_macs(method.encoder, (s, s, 3))
    heads = sum(count_macs(layer) for layer in method.layers
                if isinstance(layer, keras.Model) and layer is not method.encoder)
    return {"encoder_macs_per_view": encoder, "head_macs_per_view": heads, "macs_per_view": encoder + heads}


def train_flops(macs_per_view, views_per_step):
    """FLOPs of one training step: 2 FLOPs per MAC, forward + backward ~ 3 x forward."""
    return 3 * 2 * macs_per_view * views_per_step


def peer_macs_per_view(encoder_macs, feature_dim, projection_dim=128):
    """bench_keras.py: the same CIFAR ResNet-18 as the zoo's (identical convs), head
    Dense(f -> f) -> BN -> ReLU -> Dense(f -> 128) -> BN."""
    return encoder_macs + feature_dim * feature_dim + feature_dim * projection_dim


# -------------------------------------------------------------------------------- data
def random_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def premade_views_dataset(method, batch_size, seed=0):
    """Views of ONE batch of random images, made once and repeated: the step alone is timed."""
    images, labels = random_images(batch_size, method.config.image_size, seed)
    views = method.make_views(tf.constant(images), tf.constant(labels), tf.constant([seed, 0], tf.int32))
    return tf.data.Dataset.from_tensors(views).repeat().prefetch(2)


def on_the_fly_dataset(method, images, labels, batch_size, num_steps):
    """`zoo.pipeline.pretext_dataset` for `num_steps` batches (views made in tf.data)."""
    spe = steps_per_epoch(len(images), batch_size)
    return pretext_dataset(method, images, labels, batch_size, epochs=math.ceil(num_steps / spe), end_step=num_steps)


# ------------------------------------------------------------------------------ timing
class StepTimer(keras.callbacks.Callback):
    """Wall-clock time at the end of every training batch; reading the loss forces the step
    to finish (as bench_keras.py's timer does)."""

    def __init__(self):
        super().__init__()
        self.begin, self.end, self.last_loss = [], [], None

    def on_train_batch_begin(self, batch, logs=None):
        self.begin.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        self.last_loss = float(logs["loss"])
        self.end.append(time.perf_counter())


def timed_fit(method, dataset, warmup, steps):
    """Run `fit` for warmup + steps batches; median interval between batch ends after warm-up."""
    timer = StepTimer()
    n = warmup + steps
    t0 = time.perf_counter()
    method.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False, callbacks=[timer])
    total = time.perf_counter() - t0
    times = [timer.end[i] - timer.end[i - 1] for i in range(warmup, n)]
    return {
        "median_step_s": statistics.median(times),
        "mean_step_s": statistics.mean(times),
        "min_step_s": min(times),
        "max_step_s": max(times),
        "step_times_s": times,
        "warmup_s": timer.end[warmup - 1] - t0,
        "fit_total_s": total,
        "final_loss": timer.last_loss,
    }


def compile_method(method, xla):
    method.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.9), jit_compile=bool(xla))


def rates(timing, views_per_step, views_per_image, flops_per_step):
    """Views/s, source images/s, step ms and achieved GFLOP/s of a timed fit (`peak_fraction`
    is filled in by `add_peak_fractions` once the run's matmul peak is final)."""
    med = timing["median_step_s"]
    return {
        "views_per_s": views_per_step / med,
        "images_per_s": views_per_step / views_per_image / med,
        "step_ms": 1e3 * med,
        "gflops": flops_per_step / med / 1e9,
        "peak_fraction": None,
    }


def add_peak_fractions(result, peak_gflops):
    """Achieved GFLOP/s as a fraction of the matmul peak, for every timed step in `result`."""
    timed = [r for m in result["methods"].values() for r in [*m["step"].values(), m.get("end_to_end")] if r]
    timed += [r["rates"] for r in result["peer"]["runs"] if "rates" in r]
    for r in timed:
        r["peak_fraction"] = r["gflops"] / peak_gflops


def measure_make_views(method, images, labels, batch_size=256, warmup=3, batches=40):
    """Views/s of `method.make_views` in the zoo's tf.data pipeline (parallel, prefetched)."""
    it = iter(on_the_fly_dataset(method, images, labels, batch_size, warmup + batches))
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - t0
    vpi = VIEWS_PER_IMAGE.get(method.method_name, 1)
    return {
        "batch_size": batch_size,
        "batches": batches,
        "elapsed_s": elapsed,
        "views_per_s": batches * batch_size * vpi / elapsed,
        "images_per_s": batches * batch_size / elapsed,
        "step_ms": 1e3 * elapsed / batches,
    }


def benchmark_method(name, args, xla_settings, images, labels):
    """All measurements of one method: FLOPs, make_views rate, step (per XLA setting), e2e."""
    keras.utils.set_random_seed(0)
    method = zoo.create(name, backbone="resnet18", width=args.width)
    vpi = VIEWS_PER_IMAGE[name]
    views_per_step = vpi * args.batch_size
    macs = method_macs_per_view(method)
    flops = train_flops(macs["macs_per_view"], views_per_step)
    out = {"views_per_image": vpi, "views_per_step": views_per_step, **macs, "flops_per_step": flops,
           "feature_dim": int(method.feature_dim), "step": {}}

    print(f"[{name}] make_views in tf.data ...", flush=True)
    out["make_views"] = measure_make_views(method, images, labels, args.view_batch_size, 3, args.view_batches)

    premade = premade_views_dataset(method, args.batch_size)
    e2e_xla = "off" if "off" in xla_settings else "on"
    for xla in xla_settings:
        print(f"[{name}] step, pre-made views, XLA {xla} ...", flush=True)
        compile_method(method, xla == "on")
        timing = timed_fit(method, premade, args.warmup, args.steps)
        out["step"][xla] = {**timing, **rates(timing, views_per_step, vpi, flops)}
        if xla == e2e_xla:  # same compiled step, now fed by tf.data on the fly
            print(f"[{name}] end to end, views made in tf.data, XLA {xla} ...", flush=True)
            ds = on_the_fly_dataset(method, images, labels, args.batch_size, args.warmup + args.steps)
            timing = timed_fit(method, ds, args.warmup, args.steps)
            out["end_to_end"] = {"xla": xla, **timing, **rates(timing, views_per_step, vpi, flops)}
    step_rate = out["step"][e2e_xla]["views_per_s"]
    # Share of the cores that making the step's views takes (if the two ran one after the other).
    out["augment_cost_fraction"] = step_rate / out["make_views"]["views_per_s"]
    del method
    keras.backend.clear_session()
    return out


# -------------------------------------------------------------------------------- peer
def run_peer(peer_dir, args, jit, workdir):
    """Run bench_keras.py in a subprocess; its JSON record, or {"status": ...} on failure."""
    script = Path(peer_dir) / PEER_SCRIPT
    if not script.is_file():
        return {"status": "missing", "script": str(script)}
    out_file = Path(workdir) / f"peer_jit{jit}.jsonl"
    cmd = [sys.executable, str(script), "--width", str(args.width), "--batch", str(args.batch_size),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--jit", str(jit),
           "--mode", PEER_MODE, "--tag", args.tag or "zoo-throughput", "--out", str(out_file)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.peer_timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "script": str(script), "cmd": cmd}
    record = None
    if out_file.is_file():
        lines = [ln for ln in out_file.read_text().splitlines() if ln.strip()]
        record = json.loads(lines[-1]) if lines else None
    if record is None:
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                record = json.loads(line)
                break
    if proc.returncode != 0 or record is None:
        return {"status": "failed", "script": str(script), "cmd": cmd, "returncode": proc.returncode,
                "stderr_tail": proc.stderr[-2000:]}
    return {"status": "ok", "script": str(script), "cmd": cmd, "mode": PEER_MODE, "jit": jit, "record": record}


def peer_rates(result, flops_per_step):
    """The peer's record in the zoo's units (its `imgs_per_step` counts both views)."""
    rec = result["record"]
    med = rec["median_step_s"]
    views = rec["imgs_per_step"]
    return {"views_per_s": views / med, "images_per_s": views / 2 / med, "step_ms": 1e3 * med,
            "gflops": flops_per_step / med / 1e9, "peak_fraction": None}


# ------------------------------------------------------------------------------ report
def table_rows(result):
    """Flat rows (method, measure, xla, numbers) for the printed table and RESULTS.md."""
    peer = {r["jit"]: r for r in result["peer"].get("runs", []) if r.get("status") == "ok"}
    rows = []

    def vs_peer(method, xla, views_per_s):
        p = peer.get(1 if xla == "on" else 0)
        return views_per_s / p["rates"]["views_per_s"] if method == "simclr" and p else None

    for name, m in result["methods"].items():
        rows.append(dict(method=name, measure="make_views", xla="-", **_pick(m["make_views"]), gflops=None,
                         peak_fraction=None, vs_peer=None))
        for xla, s in m["step"].items():
            rows.append(dict(method=name, measure="step", xla=xla, **_pick(s), gflops=s["gflops"],
                             peak_fraction=s["peak_fraction"], vs_peer=vs_peer(name, xla, s["views_per_s"])))
        if "end_to_end" in m:
            e = m["end_to_end"]
            rows.append(dict(method=name, measure="end_to_end", xla=e["xla"], **_pick(e), gflops=e["gflops"],
                             peak_fraction=e["peak_fraction"], vs_peer=vs_peer(name, e["xla"], e["views_per_s"])))
    for jit, p in sorted(peer.items()):
        rows.append(dict(method=f"peer:{PEER_MODE}", measure="step", xla="on" if jit else "off",
                         **_pick(p["rates"]), gflops=p["rates"]["gflops"],
                         peak_fraction=p["rates"]["peak_fraction"], vs_peer=1.0))
    return rows


def _pick(d):
    return {k: d[k] for k in ("views_per_s", "images_per_s", "step_ms")}


def _fmt_load(load):
    return "n/a" if not load else f"{load[0]:.2f}"


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def format_table(rows):
    head = f"{'method':<12} {'measure':<11} {'xla':<4} {'views/s':>9} {'images/s':>9} {'step ms':>9} " \
           f"{'GFLOP/s':>8} {'%peak':>6} {'vs peer':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        pct = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        lines.append(f"{r['method']:<12} {r['measure']:<11} {r['xla']:<4} {_fmt(r['views_per_s'], '9.0f')} "
                     f"{_fmt(r['images_per_s'], '9.0f')} {_fmt(r['step_ms'], '9.1f')} {_fmt(r['gflops'], '8.2f'):>8} "
                     f"{_fmt(pct, '6.1f'):>6} {_fmt(r['vs_peer'], '7.2f'):>7}")
    return "\n".join(lines)


def append_results_md(path, result, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = result["machine"]
    machine = f"{m['cpu_model']}, {m['cores_usable']}c, {widest_simd(m['cpu_flags'])}"
    load = result["load_average_start"][0] if result["load_average_start"] else None
    a = result["args"]
    lines = []
    for r in rows:
        pct = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        cells = [result["started_utc"], result["tag"] or "", machine, _fmt(load, ".2f"),
                 _fmt(result["matmul_peak_gflops"], ".1f"), f"{a['width']:g}", str(a["batch_size"]),
                 r["method"], r["measure"], r["xla"], _fmt(r["views_per_s"], ".0f"), _fmt(r["images_per_s"], ".0f"),
                 _fmt(r["step_ms"], ".1f"), _fmt(r["gflops"], ".2f"), _fmt(pct, ".1f"), _fmt(r["vs_peer"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a") as f:
        if new:
            f.write(MD_HEADER)
        f.write("\n".join(lines) + "\n")


# -------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier")
    ap.add_argument("--batch-size", type=int, default=128, help="source images per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1: tracing, XLA)")
    ap.add_argument("--methods", default="simclr,rotation")
    ap.add_argument("--xla", choices=["both", "on", "off"], default="both")
    ap.add_argument("--peer", type=int, choices=[0, 1], default=1, help="run peer-bench/bench_keras.py")
    ap.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR))
    ap.add_argument("--peer-timeout", type=float, default=900.0, help="seconds per peer run")
    ap.add_argument("--out", default=str(BENCH_DIR / "results"), help="directory of the JSON files")
    ap.add_argument("--results-md", default=str(BENCH_DIR / "RESULTS.md"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"],
                    help="Keras dtype policy of the zoo's steps (the peer runs in float32); "
                         "recorded in the tag of every RESULTS.md row")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--num-images", type=int, default=4096, help="random images for the tf.data rows")
    ap.add_argument("--view-batch-size", type=int, default=256)
    ap.add_argument("--view-batches", type=int, default=40, help="timed tf.data batches for make_views")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(VIEWS_PER_IMAGE))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; known: {sorted(VIEWS_PER_IMAGE)}")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    return args


def main(argv=None):
    """Run every measurement; print the table; write the JSON and RESULTS.md. Returns the
    result dict (with "json_path")."""
    args = parse_args(argv)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
        args.tag = f"{args.tag} {args.precision}".strip()
    started = _dt.datetime.now(_dt.timezone.utc)
    xla_settings = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.xla]
    result = {"tag": args.tag, "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
              "args": {k: v for k, v in vars(args).items()}, "load_average_start": load_average(),
              "machine": machine_facts(), "peer_mode": PEER_MODE}
    load = result["load_average_start"]
    if load and load[0] > 0.5:
        print(f"WARNING: 1-min load average {load[0]:.2f} at start: the machine is busy, numbers are noisy.",
              flush=True)

    print("matmul peak ...", flush=True)
    peak_start = matmul_peak(args.matmul_size)
    result["matmul_peak_start"] = peak_start

    images, labels = random_images(max(args.num_images, 2 * args.batch_size, 2 * args.view_batch_size))
    result["methods"] = {}
    for name in args.methods:
        result["methods"][name] = benchmark_method(name, args, xla_settings, images, labels)

    result["peer"] = {"status": "skipped (--peer 0)", "runs": []}
    if args.peer:
        peer_dir = Path(args.peer_dir)
        if not (peer_dir / PEER_SCRIPT).is_file():
            msg = f"peer script {peer_dir / PEER_SCRIPT} is missing: no peer comparison"
            print(f"WARNING: {msg}", flush=True)
            result["peer"] = {"status": "missing", "script": str(peer_dir / PEER_SCRIPT), "runs": []}
        else:
            simclr = result["methods"].get("simclr")
            if simclr is None:  # the peer's FLOPs need the encoder count
                keras.utils.set_random_seed(0)
                tmp = zoo.create("simclr", backbone="resnet18", width=args.width)
                enc, fdim = method_macs_per_view(tmp)["encoder_macs_per_view"], int(tmp.feature_dim)
                del tmp
                keras.backend.clear_session()
            else:
                enc, fdim = simclr["encoder_macs_per_view"], simclr["feature_dim"]
            peer_flops = train_flops(peer_macs_per_view(enc, fdim), 2 * args.batch_size)
            runs = []
            with tempfile.TemporaryDirectory() as work:
                for xla in xla_settings:
                    jit = int(xla == "on")
                    print(f"peer {PEER_SCRIPT} --mode {PEER_MODE} --jit {jit} ...", flush=True)
                    r = run_peer(peer_dir, args, jit, work)
                    if r["status"] == "ok":
                        r["flops_per_step"] = peer_flops
                        r["rates"] = peer_rates(r, peer_flops)
                    else:
                        print(f"WARNING: peer run --jit {jit}: {r['status']}", flush=True)
                    runs.append(r)
            result["peer"] = {"status": "ok" if all(r["status"] == "ok" for r in runs) else "partial",
                              "script": str(peer_dir / PEER_SCRIPT), "mode": PEER_MODE, "runs": runs}

    print("matmul peak again ...", flush=True)
    result["matmul_peak_end"] = matmul_peak(args.matmul_size)
    # The best of the two: a busy machine only ever lowers a measurement.
    peak = result["matmul_peak_gflops"] = max(peak_start["gflops"], result["matmul_peak_end"]["gflops"])
    add_peak_fractions(result, peak)
    result["load_average_end"] = load_average()
    result["elapsed_s"] = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()

    rows = table_rows(result)
    result["rows"] = rows
    result["summary"] = {f"{r['method']}_{r['measure']}_xla{r['xla']}_vs_peer": r["vs_peer"]
                         for r in rows if r["vs_peer"] is not None and not r["method"].startswith("peer")}

    m = result["machine"]
    flags = " ".join(f for f, on in m["cpu_flags"].items() if on) or "-"
    print()
    print(f"{m['cpu_model']} | {m['cores_usable']} of {m['cores']} cores | {flags} | TF {m['tensorflow']}, "
          f"Keras {m['keras']}")
    print(f"matmul peak (float32 {args.matmul_size}^2): {peak_start['gflops']:.1f} GFLOP/s at start, "
          f"{result['matmul_peak_end']['gflops']:.1f} at end | 1-min load {_fmt_load(load)} -> "
          f"{_fmt_load(result['load_average_end'])}")
    print(f"width {args.width:g}, batch {args.batch_size} images, {args.steps} timed steps after {args.warmup}; "
          f"peer: {result['peer']['status']}" + (f" (bench_keras.py --mode {PEER_MODE})" if args.peer else ""))
    for name, mm in result["methods"].items():
        print(f"{name}: {mm['macs_per_view'] / 1e6:.2f} MMAC/view forward "
              f"({mm['head_macs_per_view'] / 1e6:.3f} in heads), {mm['flops_per_step'] / 1e9:.2f} GFLOP/step; "
              f"making its views on all cores costs {100 * mm['augment_cost_fraction']:.0f}% of its step time")
    print()
    print(format_table(rows))

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"throughput_{stamp}{'_' + args.tag if args.tag else ''}.json"
    json_path.write_text(json.dumps(result, indent=1))
    append_results_md(args.results_md, result, rows)
    print(f"\nwrote {json_path} and appended {len(rows)} lines to {args.results_md}")
    result["json_path"] = str(json_path)
    return result


if __name__ == "__main__":
    main()
