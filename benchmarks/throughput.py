"""Training throughput of the zoo's pretext steps, measured against the machine and two peers.

Run from the repository root, on a quiet machine (`uptime`: load well below 1):

    python benchmarks/throughput.py          # simclr + rotation, width 0.25, batch 128, XLA off and on, peers
    python benchmarks/throughput.py --xla off --peer none --methods simclr --tag quick
    # issue 15's targets in one run (torch + lightly in a venv of their own, see benchmarks/README.md):
    python benchmarks/throughput.py --methods simclr --widths 0.25,1 --batch-sizes 128 \\
        --precisions float32,mixed_bfloat16 --xla off --end-to-end 0 --peer keras,lightly \\
        --lightly-python ~/lightly-venv/bin/python --peer-timeout 3600 --tag issue15

Everything is measured in ONE run, so all numbers share the same machine state:

1. machine facts: CPU model, cores, the SIMD/AMX flags that matter, TF/Keras versions, and the
   float32 `tf.matmul` peak (GFLOP/s, best of a few 2048x2048 products, at the start and the
   end of the run: a big gap between the two means the machine was busy);
2. `make_views`: per method, the tf.data view-making rate (`zoo.pipeline.pretext_dataset` over
   random uint8 32x32 images, batches of 256, all cores) with no training step;
3. `step`: per method x precision x width x batch size, the zoo's training step
   (`zoo.create(method, backbone="resnet18", width=W)`, any registered method; SGD momentum 0.9
   from `zoo.optimizers.make_optimizer`) fed with the method's own views (`make_views`) made
   ONCE ahead of time and repeated, so only the step is timed; `jit_compile` off and/or on;
4. `end_to_end` (unless `--end-to-end 0`): `fit` on `zoo.pipeline.pretext_dataset`, views made on
   the fly as real training does, so augmentation competes with the step for the cores;
5. peers, each in a subprocess at every width and batch size (`--peer keras,lightly`):
   `keras`: `../shared/peer-bench/bench_keras.py` (a plain Keras 3 SimCLR step, the floor the zoo
   must beat) with `--mode concat` (one forward pass over the 2N concatenated views, as the
   zoo's SimCLR does) and `--jit 0` (and `--jit 1` when XLA rows are measured);
   `lightly`: `bench_lightly.py` (the lightly library on PyTorch CPU, the peer users pick) in its
   own mode (`twopass`, lightly's benchmark style; `--lightly-modes`), with `--channels-last 1`
   (its fastest layout here) and 0 (its default), each also with `--bf16 1` (bfloat16 autocast)
   when mixed_bfloat16 is among `--precisions`. Run by `--lightly-python` (default: this
   Python); when that cannot import torch, torchvision and lightly, the lightly rows are skipped
   with the reason printed.

Thread settings (`--threads 2,1 1,2`: intra-op,inter-op pairs) must be set before TensorFlow runs
its first op, so the zoo's rows of each setting are measured by re-running this script in a
subprocess per setting (the machine facts, matmul peak and peers stay in the parent, with the
default threads). Without `--threads` the zoo is measured in this process with TF's defaults.

How to read the table (one row per measurement):

    method       a registered method | peer:keras | peer:lightly-cl (channels-last) | peer:lightly-nchw
    measure      step | make_views | end_to_end
    w, b         ResNet-18 width multiplier and batch (source images per step)
    prec         f32 | bf16 (the zoo: Keras dtype policy mixed_bfloat16; lightly: --bf16 1 autocast)
    threads      intra,inter threads of the zoo's TF ("default": TF chooses); lightly: torch's
    xla          jit_compile of the step (off is what zoo training uses on CPU; "-": tf.data, torch)
    views/s      network image inputs per second, of whatever size: SimCLR 2 per image, RotNet 4,
                 DINO 2 large + 10 small crops, jigsaw 9 tiles (counted from the views the method
                 makes; reconstruction targets, TARGET_IMAGES, are not inputs); the number to
                 compare with the peers (whose "imgs/s" counts both views)
    images/s     source images per second (= views/s / views per image)
    step ms      median interval between successive training steps after warm-up
                 (for make_views: milliseconds per tf.data batch)
    GFLOP/s      achieved: analytic FLOPs of a step / median step time. FLOPs = 3 x forward
                 (forward + backward) x 2 x MACs of every Conv/Dense layer of the encoder and
                 the heads, per view, counted from the built model (`count_macs`); BN, ReLU, adds,
                 pooling and the loss are not counted. Only for methods whose step sends every
                 view once, with gradients, through the encoder and every head (FLOPS_COUNTED);
                 empty for the others (momentum encoders run forward only, patch and context
                 heads see several views at once), rather than a wrong number
    %peak        GFLOP/s / the float32 matmul peak measured in this run (also for bf16 rows)
    of w1        GFLOP/s / the GFLOP/s of width 1 in the same run (same method, measure, batch,
                 precision, threads, xla), when width 1 was measured: how well a small network
                 uses the cores (issue 15: width 0.25 at >= 0.90)
    vs keras     views/s / the keras peer's views/s at the same width, batch and XLA setting
                 (SimCLR rows; the peer runs float32); > 1 means the zoo is faster
    vs lightly   views/s / the FASTEST lightly setting's views/s at the same width and batch
                 (SimCLR and peer rows). For end_to_end the zoo pays for augmentation and the
                 peers do not, which is the comparison ../shared/DESIGN.md (the design sketch beside the repository) asks to win

Numbers are comparable only within one run on one machine (machines here differ up to 5x).
Each run writes a timestamped JSON file in --out (everything measured, incl. raw step times)
and appends one markdown line per measurement to benchmarks/RESULTS.md (--results-md).
"""
import argparse
import dataclasses
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
from zoo.registry import get_method  # noqa: E402

#: CPU flags that decide conv/matmul speed on x86 (AMX is Sapphire Rapids and later).
CPU_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
#: Methods whose training step sends every image view once, with gradients, through the encoder
#: and every head (sub-model): for them FLOPs per step = 3 x 2 x (encoder + heads MACs) x views.
#: The others (momentum encoders run forward only; jigsaw, CPC, DIM heads see several views or
#: maps at once) get no GFLOP/s rather than a wrong one.
FLOPS_COUNTED = ("simclr", "rotation", "barlow_twins", "vicreg", "supcon", "triplet", "npid")
#: Image views that are reconstruction targets, compared with the network's output, not fed to it
#: (every other image tensor a method's `make_views` returns is a network input, counted in views/s).
TARGET_IMAGES = {"autoencoder": ("images",), "denoising_autoencoder": ("images",), "context_encoder": ("images",)}
PRECISIONS = ("float32", "mixed_bfloat16")
PEERS = ("keras", "lightly")
KERAS_SCRIPT = "bench_keras.py"
KERAS_MODE = "concat"  # one forward over the 2N concatenated views = zoo SimCLR.pretext_loss
LIGHTLY_SCRIPT = "bench_lightly.py"
LIGHTLY_MODES = ("twopass", "concat")  # twopass: lightly's own benchmark (one forward per view)
LIGHTLY_IMPORTS = "import torch, torchvision, lightly"
DEFAULT_PEER_DIR = REPO_ROOT.parent / "shared" / "peer-bench"
#: Rows of one training-set size for the methods with a per-image memory (NPID, PIRL): the
#: CIFAR-10 split the zoo trains on (45,000 images, 5,000 held out for val).
DEFAULT_NUM_EXAMPLES = 45000

MD_COLUMNS = ("| run | tag | machine | load | peak GFLOP/s | w | b | prec | threads | method | measure | xla "
              "| views/s | img/s | ms | GFLOP/s | %peak | of w1 | vs keras | vs lightly |")
MD_HEADER = f"""
# Throughput results: widths, precisions, threads, lightly

Written by `benchmarks/throughput.py` (see `benchmarks/README.md`); one line per measurement.
Compare numbers only within one run (same `run` stamp) on one machine: machines here differ
up to 5x, and a busy machine (high `load`) makes every number noisy.

Columns: `run` start time (UTC) and `tag`; `machine`: CPU model, cores, widest SIMD; `load`:
1-minute load average at the start; `peak`: float32 matmul GFLOP/s measured in the same run;
`w`/`b`: backbone width and batch (source images); `prec`: f32 or bf16 (zoo: Keras
mixed_bfloat16; lightly: bfloat16 autocast); `threads`: intra,inter of the zoo's TF (default: TF
chooses; lightly: torch's); `method` (peers: `peer:keras` = bench_keras.py --mode concat,
`peer:lightly-cl` / `-nchw` = bench_lightly.py channels-last / default layout); `measure`:
`step` (pre-made views, step only), `make_views` (tf.data views only), `end_to_end` (fit with
views made on the fly); `xla`: jit_compile of the step; `views/s`: network inputs per second;
`img/s`: source images per second; `ms`: median step (or tf.data batch) time; `GFLOP/s`
achieved (analytic conv/dense FLOPs, forward+backward = 3x forward; empty where not counted)
and `%peak` of the matmul peak; `of w1`: GFLOP/s over width 1's in the same run; `vs keras`:
views/s over the keras peer's (same width, batch, XLA); `vs lightly`: views/s over the fastest
lightly setting's (same width, batch); >1 = faster.

{MD_COLUMNS}
|{" --- |" * MD_COLUMNS.count(" |")}
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


def create_method(name, width, num_examples=DEFAULT_NUM_EXAMPLES):
    """`zoo.create(name, backbone="resnet18", width=width)` (the method's own ViT for those that need
    tokens, MAE); methods with a per-image memory get `num_examples` rows, as the trainer sizes them
    from the training set."""
    config = get_method(name).Config
    fields = {f.name for f in dataclasses.fields(config)}
    extra = {"num_examples": num_examples} if "num_examples" in fields else {}
    backbone = config.backbone if config.backbone.startswith("vit") else "resnet18"
    return zoo.create(name, backbone=backbone, width=width, **extra)


def premade_views(method, batch_size, seed=0):
    """The method's own views (`make_views`) of ONE batch of random images."""
    images, labels = random_images(batch_size, method.config.image_size, seed)
    return method.make_views(tf.constant(images), tf.constant(labels), tf.constant([seed, 0], tf.int32))


def premade_views_dataset(method, batch_size, seed=0):
    """Views of ONE batch of random images, made once and repeated: the step alone is timed."""
    return tf.data.Dataset.from_tensors(premade_views(method, batch_size, seed)).repeat().prefetch(2)


def views_per_example(views, batch_size, targets=()):
    """Network image inputs per source image in a batch of views: every floating tensor of images
    (last axis 1 or 3 channels) but the keys in `targets` counts its leading axes,
    [B', h, w, c] -> B' (RotNet's 4B rotations) and [B, k, h, w, c] -> B x k (crops, tiles,
    patches), over `batch_size`."""
    total = 0
    for key, value in views.items():
        shape = tuple(value.shape)
        if key not in targets and value.dtype.is_floating and len(shape) in (4, 5) and shape[-1] in (1, 3):
            total += math.prod(shape[:-3])
    if total == 0 or total % batch_size:
        raise ValueError(f"views {({k: tuple(v.shape) for k, v in views.items()})} hold {total} images, not a "
                         f"whole number per source image of a batch of {batch_size}")
    return total // batch_size


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


def compile_method(method, xla):
    method.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.9), jit_compile=bool(xla))


def rates(timing, views_per_step, views_per_image, flops_per_step):
    """Views/s, source images/s, step ms and achieved GFLOP/s (None when FLOPs are not counted)
    of a timed fit (`peak_fraction` is filled in by `add_peak_fractions` once the run's matmul
    peak is final)."""
    med = timing["median_step_s"]
    return {
        "views_per_s": views_per_step / med,
        "images_per_s": views_per_step / views_per_image / med,
        "step_ms": 1e3 * med,
        "gflops": None if flops_per_step is None else flops_per_step / med / 1e9,
        "peak_fraction": None,
    }


def add_peak_fractions(result, peak_gflops):
    """Achieved GFLOP/s as a fraction of the matmul peak, for every timed step in `result`."""
    timed = [r for e in result["zoo"] for r in [*e.get("step", {}).values(), e.get("end_to_end")] if r]
    timed += [r["rates"] for p in result["peers"].values() for r in p["runs"] if "rates" in r]
    for r in timed:
        if r["gflops"] is not None:
            r["peak_fraction"] = r["gflops"] / peak_gflops


def measure_make_views(method, images, labels, views_per_image, batch_size=256, warmup=3, batches=40):
    """Views/s of `method.make_views` in the zoo's tf.data pipeline (parallel, prefetched)."""
    it = iter(on_the_fly_dataset(method, images, labels, batch_size, warmup + batches))
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - t0
    return {
        "batch_size": batch_size,
        "batches": batches,
        "elapsed_s": elapsed,
        "views_per_image": views_per_image,
        "views_per_s": batches * batch_size * views_per_image / elapsed,
        "images_per_s": batches * batch_size / elapsed,
        "step_ms": 1e3 * elapsed / batches,
    }


# ------------------------------------------------------------------------------- the zoo
def threads_label(intra, inter):
    """'intra,inter' of a TF thread setting; 'default' when TF chooses (0, 0)."""
    return "default" if not intra and not inter else f"{intra},{inter}"


def current_threads():
    return threads_label(tf.config.threading.get_intra_op_parallelism_threads(),
                         tf.config.threading.get_inter_op_parallelism_threads())


def benchmark_config(name, width, batch_size, precision, args, xla_settings, images, labels, with_make_views):
    """One method at one width, batch size and precision: FLOPs, the step per XLA setting, end
    to end (and the method's make_views rate when `with_make_views`). Returns (entry, make_views
    or None); a failure is recorded in the entry ("status", "error"), not raised, so that one
    method that cannot run (e.g. in bfloat16) does not end a long run."""
    label = f"{name} w{width:g} b{batch_size} {precision}"
    entry = {"method": name, "width": width, "batch_size": batch_size, "precision": precision, "status": "ok"}
    made = None
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        method = create_method(name, width, args.num_examples)
        views = premade_views(method, batch_size)
        vpi = views_per_example(views, batch_size, TARGET_IMAGES.get(name, ()))
        views_per_step = vpi * batch_size
        size = method.config.image_size
        if name in FLOPS_COUNTED:
            macs = method_macs_per_view(method)
            flops = train_flops(macs["macs_per_view"], views_per_step)
        else:
            macs = {"encoder_macs_per_view": count_macs(method.encoder, (size, size, 3)),
                    "head_macs_per_view": None, "macs_per_view": None}
            flops = None
        entry.update({"views_per_image": vpi, "views_per_step": views_per_step, **macs, "flops_per_step": flops,
                      "feature_dim": int(method.feature_dim), "step": {}})
        if with_make_views:
            print(f"[{name}] make_views in tf.data ...", flush=True)
            made = measure_make_views(method, images, labels, vpi, args.view_batch_size, 3, args.view_batches)

        premade = tf.data.Dataset.from_tensors(views).repeat().prefetch(2)
        e2e_xla = "off" if "off" in xla_settings else "on"
        for xla in xla_settings:
            print(f"[{label}] step, pre-made views, XLA {xla} ...", flush=True)
            compile_method(method, xla == "on")
            timing = timed_fit(method, premade, args.warmup, args.steps)
            entry["step"][xla] = {**timing, **rates(timing, views_per_step, vpi, flops)}
            if args.end_to_end and xla == e2e_xla:  # same compiled step, now fed by tf.data on the fly
                print(f"[{label}] end to end, views made in tf.data, XLA {xla} ...", flush=True)
                ds = on_the_fly_dataset(method, images, labels, batch_size, args.warmup + args.steps)
                timing = timed_fit(method, ds, args.warmup, args.steps)
                entry["end_to_end"] = {"xla": xla, **timing, **rates(timing, views_per_step, vpi, flops)}
        entry["e2e_xla"] = e2e_xla
        del method
    except Exception as error:  # noqa: BLE001 - recorded and reported, the run goes on
        entry.update({"status": "failed", "error": f"{type(error).__name__}: {error}"})
        print(f"WARNING: [{label}] failed: {entry['error'][:500]}", flush=True)
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()
    return entry, made


def measure_zoo(args, xla_settings):
    """Every method x precision x width x batch size in this process, with its current TF
    threads. Returns (zoo entries, make_views records: one per method)."""
    threads = current_threads()
    n = max(args.num_images, 2 * max(args.batch_sizes), 2 * args.view_batch_size)
    images, labels = random_images(n)
    entries, made_views = [], []
    for name in args.methods:
        made = None
        mine = []
        for precision in args.precisions:
            for width in args.widths:
                for batch_size in args.batch_sizes:
                    entry, mv = benchmark_config(name, width, batch_size, precision, args, xla_settings, images,
                                                 labels, with_make_views=made is None)
                    if mv is not None:
                        made = {"method": name, "threads": threads, **mv}
                        made_views.append(made)
                    mine.append({**entry, "threads": threads})
        for entry in mine:
            if entry["status"] == "ok" and made is not None:
                # Share of the cores that making the step's views takes (were the two run one after the other).
                entry["augment_cost_fraction"] = entry["step"][entry["e2e_xla"]]["views_per_s"] / made["views_per_s"]
        entries += mine
    return entries, made_views


def child_argv(args):
    """The arguments that make a child run measure the same zoo rows (no peers, no files)."""
    return ["--widths", ",".join(f"{w:g}" for w in args.widths),
            "--batch-sizes", ",".join(str(b) for b in args.batch_sizes),
            "--precisions", ",".join(args.precisions), "--methods", ",".join(args.methods),
            "--xla", args.xla, "--end-to-end", str(args.end_to_end), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--num-images", str(args.num_images),
            "--view-batch-size", str(args.view_batch_size), "--view-batches", str(args.view_batches),
            "--num-examples", str(args.num_examples), "--peer", "none"]


def run_threads_child(args, intra, inter, workdir):
    """The zoo's rows at one TF thread setting, measured by this script in a subprocess (TF's
    threads must be set before its first op; this process has run ops). Its progress goes to
    this process's output; its entries come back through a JSON file."""
    out = Path(workdir) / f"zoo_threads_{intra}_{inter}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(args),
           "--child-threads", f"{intra},{inter}", "--child-out", str(out)]
    print(f"zoo at threads intra {intra}, inter {inter} (subprocess) ...", flush=True)
    proc = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode != 0 or not out.is_file():
        print(f"WARNING: the zoo at threads {intra},{inter} failed (exit code {proc.returncode})", flush=True)
        return {"status": "failed", "intra": intra, "inter": inter, "cmd": cmd, "returncode": proc.returncode}
    return {"status": "ok", "intra": intra, "inter": inter, "cmd": cmd, **json.loads(out.read_text())}


# -------------------------------------------------------------------------------- peers
def run_script(python, script, script_args, out_file, timeout):
    """Run a peer-bench script in a subprocess; {"status": "ok", "record": its JSON record} or
    {"status": "failed" | "timeout", ...}."""
    cmd = [str(python), str(script), *script_args, "--out", str(out_file)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "cmd": cmd}
    record = None
    if Path(out_file).is_file():
        lines = [ln for ln in Path(out_file).read_text().splitlines() if ln.strip()]
        record = json.loads(lines[-1]) if lines else None
    if record is None:
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("{"):
                record = json.loads(line)
                break
    if proc.returncode != 0 or record is None:
        return {"status": "failed", "cmd": cmd, "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
    return {"status": "ok", "cmd": cmd, "record": record}


def run_keras_peer(peer_dir, args, width, batch_size, jit, workdir):
    """bench_keras.py --mode concat at one width, batch and jit setting."""
    script = Path(peer_dir) / KERAS_SCRIPT
    run = {"script": str(script), "width": width, "batch_size": batch_size, "jit": jit, "mode": KERAS_MODE}
    if not script.is_file():
        return {"status": "missing", **run}
    out = Path(workdir) / f"keras_w{width:g}_b{batch_size}_jit{jit}.jsonl"
    script_args = ["--width", f"{width:g}", "--batch", str(batch_size), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--jit", str(jit), "--mode", KERAS_MODE,
                   "--tag", args.tag or "zoo-throughput"]
    return {**run_script(sys.executable, script, script_args, out, args.peer_timeout), **run}


def lightly_settings(args):
    """The bench_lightly.py settings of a run: each mode, channels-last (its fastest layout
    here) and its default layout, each also in bfloat16 autocast when the zoo measures
    mixed_bfloat16."""
    bf16 = (0, 1) if "mixed_bfloat16" in args.precisions else (0,)
    return [{"mode": mode, "channels_last": cl, "bf16": b}
            for mode in args.lightly_modes for b in bf16 for cl in (1, 0)]


def lightly_unavailable(python):
    """None when `python` imports torch, torchvision and lightly; otherwise why not."""
    try:
        proc = subprocess.run([str(python), "-c", LIGHTLY_IMPORTS], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python}: {error}"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return f"{python} cannot `{LIGHTLY_IMPORTS}`: {lines[-1] if lines else f'exit code {proc.returncode}'}"


def run_lightly_peer(peer_dir, args, width, batch_size, setting, workdir):
    """bench_lightly.py at one width, batch and setting (mode, channels_last, bf16)."""
    script = Path(peer_dir) / LIGHTLY_SCRIPT
    run = {"script": str(script), "width": width, "batch_size": batch_size, **setting, "python": args.lightly_python}
    if not script.is_file():
        return {"status": "missing", **run}
    name = f"lightly_w{width:g}_b{batch_size}_{setting['mode']}_cl{setting['channels_last']}_bf{setting['bf16']}"
    script_args = ["--width", f"{width:g}", "--batch", str(batch_size), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--threads", str(args.lightly_threads), "--mode", setting["mode"],
                   "--channels-last", str(setting["channels_last"]), "--bf16", str(setting["bf16"]),
                   "--tag", args.tag or "zoo-throughput"]
    return {**run_script(args.lightly_python, script, script_args, Path(workdir) / f"{name}.jsonl",
                         args.peer_timeout), **run}


def peer_rates(result, flops_per_step):
    """A peer's record in the zoo's units (its `imgs_per_step` counts both views)."""
    rec = result["record"]
    med = rec["median_step_s"]
    views = rec["imgs_per_step"]
    return {"views_per_s": views / med, "images_per_s": views / 2 / med, "step_ms": 1e3 * med,
            "gflops": flops_per_step / med / 1e9, "peak_fraction": None}


def simclr_counts(width, entries, num_examples):
    """(encoder MACs per view, feature dim) of the zoo's SimCLR ResNet-18 at `width`: the peers'
    network has the same convolutions. From the run's entries, else counted on a fresh model."""
    for e in entries:
        if e["method"] == "simclr" and e["width"] == width and e["status"] == "ok":
            return e["encoder_macs_per_view"], e["feature_dim"]
    keras.utils.set_random_seed(0)
    method = create_method("simclr", width, num_examples)
    counts = method_macs_per_view(method)["encoder_macs_per_view"], int(method.feature_dim)
    del method
    keras.backend.clear_session()
    return counts


def measure_peers(args, xla_settings, entries, workdir):
    """Every peer of `--peer` at every width and batch size: {peer: {"status", "runs", ...}}."""
    peers = {p: {"status": f"skipped (--peer {','.join(args.peer) or 'none'})", "runs": []}
             for p in PEERS if p not in args.peer}
    if not args.peer:
        return peers
    counts = {}  # width -> (encoder MACs, feature dim), counted when a peer run needs them

    def flops(width, batch_size):
        if width not in counts:
            counts[width] = simclr_counts(width, entries, args.num_examples)
        encoder, feature_dim = counts[width]
        return train_flops(peer_macs_per_view(encoder, feature_dim), 2 * batch_size)

    def finish(peer, runs, **extra):
        for r in runs:
            if r["status"] == "ok":
                r["flops_per_step"] = flops(r["width"], r["batch_size"])
                r["rates"] = peer_rates(r, r["flops_per_step"])
        status = "ok" if all(r["status"] == "ok" for r in runs) else "partial"
        peers[peer] = {"status": status, "runs": runs, **extra}

    peer_dir = Path(args.peer_dir)
    for peer, script in (("keras", KERAS_SCRIPT), ("lightly", LIGHTLY_SCRIPT)):
        if peer in args.peer and not (peer_dir / script).is_file():
            print(f"WARNING: peer script {peer_dir / script} is missing: no {peer} comparison", flush=True)
            peers[peer] = {"status": "missing", "script": str(peer_dir / script), "runs": []}

    if "keras" in args.peer and "keras" not in peers:
        runs = []
        for width in args.widths:
            for batch_size in args.batch_sizes:
                for xla in xla_settings:
                    jit = int(xla == "on")
                    print(f"peer {KERAS_SCRIPT} --mode {KERAS_MODE} --jit {jit} w{width:g} b{batch_size} ...",
                          flush=True)
                    r = run_keras_peer(peer_dir, args, width, batch_size, jit, workdir)
                    if r["status"] != "ok":
                        print(f"WARNING: keras peer w{width:g} b{batch_size} --jit {jit}: {r['status']}", flush=True)
                    runs.append(r)
        finish("keras", runs, script=str(peer_dir / KERAS_SCRIPT), mode=KERAS_MODE)

    if "lightly" in args.peer and "lightly" not in peers:
        reason = lightly_unavailable(args.lightly_python)
        if reason:
            print(f"lightly peer skipped: {reason}. Install torch, torchvision and lightly for the benchmark only "
                  "(benchmarks/README.md), or pass --lightly-python of an environment that has them.", flush=True)
            peers["lightly"] = {"status": "unavailable", "reason": reason, "python": args.lightly_python, "runs": []}
        else:
            runs = []
            for width in args.widths:
                for batch_size in args.batch_sizes:
                    for setting in lightly_settings(args):
                        print(f"peer {LIGHTLY_SCRIPT} --mode {setting['mode']} --channels-last "
                              f"{setting['channels_last']} --bf16 {setting['bf16']} w{width:g} b{batch_size} ...",
                              flush=True)
                        r = run_lightly_peer(peer_dir, args, width, batch_size, setting, workdir)
                        if r["status"] != "ok":
                            print(f"WARNING: lightly peer {setting} w{width:g} b{batch_size}: {r['status']} "
                                  f"{r.get('stderr_tail', '')[-300:]}", flush=True)
                        runs.append(r)
            finish("lightly", runs, script=str(peer_dir / LIGHTLY_SCRIPT), python=args.lightly_python,
                   threads=args.lightly_threads)
    return peers


# ------------------------------------------------------------------------------ report
def _row(**fields):
    row = dict(method=None, measure="step", xla="-", width=None, batch_size=None, precision="-", threads="default",
               views_per_s=None, images_per_s=None, step_ms=None, gflops=None, peak_fraction=None,
               gflops_vs_w1=None, vs_keras=None, vs_lightly=None)
    row.update(fields)
    return row


def _pick(d):
    return {k: d[k] for k in ("views_per_s", "images_per_s", "step_ms")}


def _timed(d):
    return {**_pick(d), "gflops": d["gflops"], "peak_fraction": d["peak_fraction"]}


def lightly_row_name(run):
    layout = "cl" if run["channels_last"] else "nchw"
    return f"peer:lightly-{layout}" + ("" if run["mode"] == "twopass" else f"-{run['mode']}")


def table_rows(result):
    """Flat rows (method, measure, width, batch, precision, threads, xla, numbers, ratios) for
    the printed table and RESULTS.md."""
    rows = []
    for mv in result["make_views"]:
        rows.append(_row(method=mv["method"], measure="make_views", batch_size=mv["batch_size"],
                         threads=mv["threads"], **_pick(mv)))
    for e in result["zoo"]:
        if e["status"] != "ok":
            continue
        common = dict(method=e["method"], width=e["width"], batch_size=e["batch_size"], precision=e["precision"],
                      threads=e["threads"])
        for xla, s in e["step"].items():
            rows.append(_row(**common, measure="step", xla=xla, **_timed(s)))
        if "end_to_end" in e:
            rows.append(_row(**common, measure="end_to_end", xla=e["end_to_end"]["xla"], **_timed(e["end_to_end"])))
    for r in result["peers"].get("keras", {}).get("runs", []):
        if r["status"] == "ok":
            rows.append(_row(method="peer:keras", xla="on" if r["jit"] else "off", width=r["width"],
                             batch_size=r["batch_size"], precision="float32", **_timed(r["rates"])))
    for r in result["peers"].get("lightly", {}).get("runs", []):
        if r["status"] == "ok":
            rec = r["record"]
            rows.append(_row(method=lightly_row_name(r), width=r["width"], batch_size=r["batch_size"],
                             precision="mixed_bfloat16" if r["bf16"] else "float32",
                             threads=f"{rec.get('torch_threads', '?')},{rec.get('torch_interop_threads', '?')}",
                             **_timed(r["rates"])))
    add_ratios(rows)
    return rows


def add_ratios(rows):
    """`gflops_vs_w1` (GFLOP/s over width 1's, same method, measure, batch, precision, threads,
    xla), `vs_keras` (views/s over the keras peer's at the same width, batch, xla: SimCLR and
    keras rows) and `vs_lightly` (views/s over the fastest lightly setting's at the same width
    and batch: SimCLR and peer rows)."""
    timed = [r for r in rows if r["measure"] != "make_views"]
    same = lambda r: (r["method"], r["measure"], r["batch_size"], r["precision"], r["threads"], r["xla"])  # noqa: E731
    width1 = {same(r): r["gflops"] for r in timed if r["width"] == 1 and r["gflops"]}
    keras_peer = {(r["width"], r["batch_size"], r["xla"]): r["views_per_s"]
                  for r in timed if r["method"] == "peer:keras"}
    fastest_lightly = {}
    for r in timed:
        if r["method"].startswith("peer:lightly"):
            key = (r["width"], r["batch_size"])
            fastest_lightly[key] = max(fastest_lightly.get(key, 0.0), r["views_per_s"])
    for r in timed:
        if r["gflops"] is not None and same(r) in width1:
            r["gflops_vs_w1"] = r["gflops"] / width1[same(r)]
        if r["method"] in ("simclr", "peer:keras"):
            k = keras_peer.get((r["width"], r["batch_size"], r["xla"]))
            r["vs_keras"] = r["views_per_s"] / k if k else None
        if r["method"] == "simclr" or r["method"].startswith("peer:"):
            fastest = fastest_lightly.get((r["width"], r["batch_size"]))
            r["vs_lightly"] = r["views_per_s"] / fastest if fastest else None


def target_lines(result, rows):
    """Issue 15's targets as read from this run: SimCLR step against lightly's fastest setting
    (>= 1.5x), width 0.25's GFLOP/s against width 1's (>= 0.90), and each method's tf.data
    view pipeline against the step's consumption (>= 3x)."""
    lines = []
    for r in rows:
        if r["method"] == "simclr" and r["measure"] == "step":
            lines.append(f"simclr step w{r['width']:g} b{r['batch_size']} {_prec(r['precision'])} "
                         f"threads {r['threads']} xla {r['xla']}: {_times(r['vs_lightly'])} lightly's fastest "
                         f"(>= 1.5x), {_times(r['vs_keras'])} keras; GFLOP/s {_times(r['gflops_vs_w1'])} width 1's "
                         "(>= 0.90x at width 0.25)")
    for e in result["zoo"]:
        if e["status"] == "ok" and e.get("augment_cost_fraction"):
            lines.append(f"{e['method']} w{e['width']:g} b{e['batch_size']} {_prec(e['precision'])} threads "
                         f"{e['threads']}: tf.data makes views at {1 / e['augment_cost_fraction']:.1f}x the step's "
                         "consumption (>= 3x)")
    return lines


def _times(ratio):
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _prec(precision):
    return {"float32": "f32", "mixed_bfloat16": "bf16"}.get(precision, precision)


def _fmt_load(load):
    return "n/a" if not load else f"{load[0]:.2f}"


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def _width(w):
    return "-" if w is None else f"{w:g}"


def format_table(rows):
    head = (f"{'method':<18} {'measure':<10} {'w':>5} {'b':>4} {'prec':<4} {'threads':<7} {'xla':<3} {'views/s':>8} "
            f"{'images/s':>8} {'step ms':>8} {'GFLOP/s':>8} {'%peak':>5} {'of w1':>5} {'vs keras':>8} "
            f"{'vs lightly':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        pct = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        lines.append(f"{r['method']:<18} {r['measure']:<10} {_width(r['width']):>5} {r['batch_size']:>4} "
                     f"{_prec(r['precision']):<4} {r['threads']:<7} {r['xla']:<3} {_fmt(r['views_per_s'], '8.0f'):>8} "
                     f"{_fmt(r['images_per_s'], '8.0f'):>8} {_fmt(r['step_ms'], '8.1f'):>8} "
                     f"{_fmt(r['gflops'], '8.2f'):>8} {_fmt(pct, '5.1f'):>5} {_fmt(r['gflops_vs_w1'], '5.2f'):>5} "
                     f"{_fmt(r['vs_keras'], '8.2f'):>8} {_fmt(r['vs_lightly'], '10.2f'):>10}")
    return "\n".join(lines)


def append_results_md(path, result, rows):
    """One markdown row per measurement; the table header first when the file does not have
    this version's columns yet (a new section at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = result["machine"]
    machine = f"{m['cpu_model']}, {m['cores_usable']}c, {widest_simd(m['cpu_flags'])}"
    load = result["load_average_start"][0] if result["load_average_start"] else None
    lines = []
    for r in rows:
        pct = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        cells = [result["started_utc"], result["tag"] or "", machine, _fmt(load, ".2f"),
                 _fmt(result["matmul_peak_gflops"], ".1f"), _width(r["width"]), str(r["batch_size"]),
                 _prec(r["precision"]), r["threads"], r["method"], r["measure"], r["xla"],
                 _fmt(r["views_per_s"], ".0f"), _fmt(r["images_per_s"], ".0f"), _fmt(r["step_ms"], ".1f"),
                 _fmt(r["gflops"], ".2f"), _fmt(pct, ".1f"), _fmt(r["gflops_vs_w1"], ".2f"),
                 _fmt(r["vs_keras"], ".2f"), _fmt(r["vs_lightly"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    text = path.read_text() if path.exists() else ""
    with open(path, "a") as f:
        if MD_COLUMNS not in text:
            f.write(MD_HEADER if text.strip() else MD_HEADER.lstrip("\n"))
        f.write("\n".join(lines) + "\n")


# -------------------------------------------------------------------------------- main
def _split(text):
    return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier")
    ap.add_argument("--widths", help="several widths in one run, e.g. 0.25,1 (instead of --width)")
    ap.add_argument("--batch-size", type=int, default=128, help="source images per step")
    ap.add_argument("--batch-sizes", help="several batch sizes in one run, e.g. 128,256 (instead of --batch-size)")
    ap.add_argument("--precision", default="float32", choices=PRECISIONS,
                    help="Keras dtype policy of the zoo's steps (keras peer: float32; lightly: --bf16 1 for bfloat16)")
    ap.add_argument("--precisions", help="several, e.g. float32,mixed_bfloat16 (instead of --precision)")
    ap.add_argument("--threads", nargs="+", metavar="INTRA,INTER",
                    help="TF intra-op,inter-op thread settings of the zoo's rows, e.g. --threads 2,1 1,2 "
                         "(0,0: TF's default); one subprocess each")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1: tracing, XLA)")
    ap.add_argument("--methods", default="simclr,rotation", help="comma-separated registered methods, or all")
    ap.add_argument("--xla", choices=["both", "on", "off"], default="both")
    ap.add_argument("--end-to-end", type=int, choices=[0, 1], default=1, help="also fit on views made on the fly")
    ap.add_argument("--peer", default="keras,lightly",
                    help="peers to run: keras and/or lightly (comma-separated), all, none; 1 = all, 0 = none")
    ap.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR))
    ap.add_argument("--peer-timeout", type=float, default=900.0, help="seconds per peer run")
    ap.add_argument("--lightly-python", default=sys.executable,
                    help="the Python that runs bench_lightly.py (one with torch, torchvision, lightly)")
    ap.add_argument("--lightly-modes", default="twopass",
                    help="bench_lightly.py --mode values: twopass (lightly's own, one forward per view), concat")
    ap.add_argument("--lightly-threads", type=int, help="torch threads of the lightly peer (default: usable cores)")
    ap.add_argument("--num-examples", type=int, default=DEFAULT_NUM_EXAMPLES,
                    help="memory-bank rows of NPID / PIRL (the training-set size they would train on)")
    ap.add_argument("--out", default=str(BENCH_DIR / "results"), help="directory of the JSON files")
    ap.add_argument("--results-md", default=str(BENCH_DIR / "RESULTS.md"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--num-images", type=int, default=4096, help="random images for the tf.data rows")
    ap.add_argument("--view-batch-size", type=int, default=256)
    ap.add_argument("--view-batches", type=int, default=40, help="timed tf.data batches for make_views")
    ap.add_argument("--child-threads", help=argparse.SUPPRESS)  # set by run_threads_child
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    try:
        args.widths = [float(w) for w in _split(args.widths)] if args.widths else [args.width]
        args.batch_sizes = [int(b) for b in _split(args.batch_sizes)] if args.batch_sizes else [args.batch_size]
    except ValueError as error:
        ap.error(f"--widths / --batch-sizes take comma-separated numbers, e.g. --widths 0.25,1 ({error})")
    if min(args.widths) <= 0 or min(args.batch_sizes) < 1:
        ap.error(f"widths must be > 0 and batch sizes >= 1; got {args.widths} and {args.batch_sizes}")
    args.precisions = _split(args.precisions) if args.precisions else [args.precision]
    bad = sorted(set(args.precisions) - set(PRECISIONS))
    if bad:
        ap.error(f"unknown precision(s) {bad}; choose from {list(PRECISIONS)}")

    known = zoo.list_methods()
    args.methods = known if args.methods.strip() == "all" else _split(args.methods)
    bad = sorted(set(args.methods) - set(known))
    if bad:
        ap.error(f"unknown method(s) {bad}; registered: {known} (or --methods all)")

    peer = args.peer.strip().lower()
    args.peer = {"1": list(PEERS), "all": list(PEERS), "0": [], "none": []}.get(peer, _split(peer))
    bad = sorted(set(args.peer) - set(PEERS))
    if bad:
        ap.error(f"unknown peer(s) {bad} in --peer {peer!r}; choose from {list(PEERS)}, all, none (or 1 / 0)")
    args.lightly_modes = _split(args.lightly_modes)
    bad = sorted(set(args.lightly_modes) - set(LIGHTLY_MODES))
    if bad or not args.lightly_modes:
        ap.error(f"--lightly-modes {bad or args.lightly_modes}: choose from {list(LIGHTLY_MODES)}")
    if args.lightly_threads is None:
        args.lightly_threads = cpu_info()["cores_usable"]

    pairs = []
    for text in args.threads or []:
        parts = _split(text)
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            ap.error(f"--threads {text!r}: give intra,inter pairs of non-negative integers, e.g. --threads 2,1 1,2")
        pairs.append((int(parts[0]), int(parts[1])))
    args.threads = pairs
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    return args


def run_as_child(args, xla_settings):
    """The zoo's rows at the thread setting `--child-threads`, written to `--child-out`."""
    intra, inter = (int(t) for t in args.child_threads.split(","))
    # Before TensorFlow runs any op (none has run in this process yet).
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    entries, made_views = measure_zoo(args, xla_settings)
    Path(args.child_out).write_text(json.dumps({"threads": current_threads(), "zoo": entries,
                                                "make_views": made_views}))
    return {"zoo": entries, "make_views": made_views}


def main(argv=None):
    """Run every measurement; print the table; write the JSON and RESULTS.md. Returns the
    result dict (with "json_path")."""
    args = parse_args(argv)
    xla_settings = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.xla]
    if args.child_out:
        return run_as_child(args, xla_settings)
    started = _dt.datetime.now(_dt.timezone.utc)
    result = {"tag": args.tag, "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
              "args": {k: v for k, v in vars(args).items()}, "load_average_start": load_average(),
              "machine": machine_facts(), "keras_peer_mode": KERAS_MODE, "threads_runs": []}
    load = result["load_average_start"]
    if load and load[0] > 0.5:
        print(f"WARNING: 1-min load average {load[0]:.2f} at start: the machine is busy, numbers are noisy.",
              flush=True)

    print("matmul peak ...", flush=True)
    peak_start = matmul_peak(args.matmul_size)
    result["matmul_peak_start"] = peak_start

    with tempfile.TemporaryDirectory() as work:
        if args.threads:
            result["zoo"], result["make_views"] = [], []
            for intra, inter in args.threads:
                child = run_threads_child(args, intra, inter, work)
                result["zoo"] += child.pop("zoo", [])
                result["make_views"] += child.pop("make_views", [])
                result["threads_runs"].append(child)
        else:
            result["zoo"], result["make_views"] = measure_zoo(args, xla_settings)
        result["peers"] = measure_peers(args, xla_settings, result["zoo"], work)

    print("matmul peak again ...", flush=True)
    result["matmul_peak_end"] = matmul_peak(args.matmul_size)
    # The best of the two: a busy machine only ever lowers a measurement.
    peak = result["matmul_peak_gflops"] = max(peak_start["gflops"], result["matmul_peak_end"]["gflops"])
    add_peak_fractions(result, peak)
    result["load_average_end"] = load_average()
    result["elapsed_s"] = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()

    rows = table_rows(result)
    result["rows"] = rows
    result["targets"] = target_lines(result, rows)

    m = result["machine"]
    flags = " ".join(f for f, on in m["cpu_flags"].items() if on) or "-"
    print()
    print(f"{m['cpu_model']} | {m['cores_usable']} of {m['cores']} cores | {flags} | TF {m['tensorflow']}, "
          f"Keras {m['keras']} | oneDNN opts {m['onednn_opts']}")
    print(f"matmul peak (float32 {args.matmul_size}^2): {peak_start['gflops']:.1f} GFLOP/s at start, "
          f"{result['matmul_peak_end']['gflops']:.1f} at end | 1-min load {_fmt_load(load)} -> "
          f"{_fmt_load(result['load_average_end'])}")
    peers = ", ".join(f"{p}: {v['status']}" for p, v in result["peers"].items())
    print(f"{args.steps} timed steps after {args.warmup} | peers: {peers}")
    counted = set()
    for e in result["zoo"]:
        if e["status"] != "ok":
            print(f"{e['method']} w{e['width']:g} b{e['batch_size']} {e['precision']}: FAILED {e['error'][:300]}")
        elif e["macs_per_view"] is not None and (e["method"], e["width"], e["batch_size"]) not in counted:
            counted.add((e["method"], e["width"], e["batch_size"]))
            print(f"{e['method']} w{e['width']:g}: {e['views_per_image']} views/image, {e['macs_per_view'] / 1e6:.2f} "
                  f"MMAC/view forward ({e['head_macs_per_view'] / 1e6:.3f} in heads), "
                  f"{e['flops_per_step'] / 1e9:.2f} GFLOP/step at batch {e['batch_size']}")
    print()
    print(format_table(rows))
    print()
    print("\n".join(result["targets"]))

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
