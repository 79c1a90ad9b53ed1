"""benchmarks/throughput.py: the analytic FLOP counter and a tiny end-to-end run of main()."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import keras
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_macs_by_hand(throughput):
    conv = keras.layers.Conv2D(8, 3, padding="same")
    assert throughput.count_macs(conv, (32, 32, 3)) == 32 * 32 * 8 * 3 * 3 * 3
    strided = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)
    assert throughput.count_macs(strided, (32, 32, 8)) == 16 * 16 * 16 * 3 * 3 * 8
    assert throughput.count_macs(keras.layers.Dense(10), (64,)) == 64 * 10

    # A model whose spatial size is unknown is counted on the given input shape; BN, ReLU and
    # pooling add nothing; a nested model is counted too.
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, head(x))
    assert throughput.count_macs(model, (32, 32, 3)) == 32 * 32 * 8 * 27 + 8 * 4
    assert throughput.count_macs(model, (16, 16, 3)) == 16 * 16 * 8 * 27 + 8 * 4

    assert throughput.train_flops(100, 4) == 3 * 2 * 100 * 4


def _positive_finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


TINY_RUN = ["--widths", "0.125", "--batch-sizes", "8", "--steps", "2", "--warmup", "1", "--xla", "off",
            "--matmul-size", "128", "--num-images", "64", "--view-batch-size", "16", "--view-batches", "2"]

# A stand-in for peer-bench/bench_lightly.py: same options and JSON record, no torch. Its step time
# depends on the layout (channels-last 1.25x faster), so the fastest setting is known.
STUB_LIGHTLY = '''
import argparse, json, sys
ap = argparse.ArgumentParser()
for name in ("--width", "--batch", "--warmup", "--steps", "--threads", "--mode", "--channels-last", "--bf16", "--tag",
             "--out"):
    ap.add_argument(name)
a = ap.parse_args()
step = 0.004 * int(a.batch) * (1.0 if a.channels_last == "1" else 1.25)
rec = dict(framework="stub", argv=sys.argv[1:], batch=int(a.batch), imgs_per_step=2 * int(a.batch), median_step_s=step,
           torch_threads=int(a.threads), torch_interop_threads=1)
print(json.dumps(rec))
with open(a.out, "a") as f:
    f.write(json.dumps(rec) + "\\n")
'''


def _fake_packages(folder, torch_source=""):
    """torch, torchvision and lightly modules that a subprocess finds first on PYTHONPATH."""
    folder.mkdir()
    (folder / "torch.py").write_text(torch_source)
    (folder / "torchvision.py").write_text("")
    (folder / "lightly.py").write_text("")
    return folder


def _stub_peer_dir(folder):
    folder.mkdir()
    (folder / "bench_lightly.py").write_text(STUB_LIGHTLY)
    return folder


def test_views_per_example_by_hand(throughput):
    import tensorflow as tf
    img = lambda *shape: tf.zeros(shape, tf.float32)  # noqa: E731
    pair = {"view_a": img(8, 32, 32, 3), "view_b": img(8, 32, 32, 3), "labels": tf.zeros([8], tf.int32)}
    assert throughput.views_per_example(pair, 8) == 2
    assert throughput.views_per_example({"images": img(32, 32, 32, 3), "rotation": tf.zeros([32], tf.int32)}, 8) == 4
    assert throughput.views_per_example({"large": img(8, 2, 32, 32, 3), "small": img(8, 10, 16, 16, 3)}, 8) == 12
    assert throughput.views_per_example({"tiles": img(8, 9, 8, 8, 3), "perm": tf.zeros([8, 9], tf.int32)}, 8) == 9
    denoising = {"images": img(8, 32, 32, 3), "inputs": img(8, 32, 32, 3)}  # target, input
    assert throughput.views_per_example(denoising, 8, targets=("images",)) == 1
    with pytest.raises(ValueError, match="whole number"):
        throughput.views_per_example({"ids": tf.zeros([8], tf.int32)}, 8)


def test_parse_args_levers_and_peers(throughput):
    import zoo
    args = throughput.parse_args(["--widths", "0.25,1", "--batch-sizes", "128,256", "--precisions",
                                  "float32,mixed_bfloat16", "--threads", "2,1", "1,2", "--methods", "all"])
    assert args.widths == [0.25, 1.0] and args.batch_sizes == [128, 256]
    assert args.precisions == ["float32", "mixed_bfloat16"] and args.threads == [(2, 1), (1, 2)]
    assert args.methods == zoo.list_methods() and args.peer == ["keras", "lightly"]
    one = throughput.parse_args(["--width", "0.5", "--batch-size", "64", "--precision", "mixed_bfloat16"])
    assert (one.widths, one.batch_sizes, one.precisions, one.threads) == ([0.5], [64], ["mixed_bfloat16"], [])
    for given, peers in (("0", []), ("none", []), ("1", ["keras", "lightly"]), ("lightly", ["lightly"]),
                         ("keras,lightly", ["keras", "lightly"])):
        assert throughput.parse_args(["--peer", given]).peer == peers, given
    for bad in (["--methods", "simclr,nope"], ["--threads", "2"], ["--peer", "torch"], ["--precisions", "float16"],
                ["--widths", "a"]):
        with pytest.raises(SystemExit):
            throughput.parse_args(bad)


def test_lightly_settings_follow_the_precisions(throughput):
    f32 = throughput.lightly_settings(throughput.parse_args([]))
    assert f32 == [{"mode": "twopass", "channels_last": 1, "bf16": 0},
                   {"mode": "twopass", "channels_last": 0, "bf16": 0}]
    both = throughput.lightly_settings(throughput.parse_args(["--precisions", "float32,mixed_bfloat16"]))
    assert {(s["channels_last"], s["bf16"]) for s in both} == {(1, 0), (0, 0), (1, 1), (0, 1)}


def _step(views_per_s, gflops):
    return {"views_per_s": views_per_s, "images_per_s": views_per_s / 2, "step_ms": 1.0, "gflops": gflops,
            "peak_fraction": None}


def test_ratios_by_hand(throughput):
    """GFLOP/s of width 1, the keras peer and lightly's FASTEST setting at the same width and batch."""
    def zoo_entry(width, views_per_s, gflops, precision="float32"):
        return {"method": "simclr", "width": width, "batch_size": 128, "precision": precision, "threads": "default",
                "status": "ok", "step": {"off": _step(views_per_s, gflops)}}

    def lightly_run(width, channels_last, views_per_s):
        return {"status": "ok", "width": width, "batch_size": 128, "mode": "twopass", "channels_last": channels_last,
                "bf16": 0, "record": {"torch_threads": 2, "torch_interop_threads": 2}, "rates": _step(views_per_s, 7.0)}

    result = {"make_views": [], "zoo": [zoo_entry(0.25, 600.0, 30.0), zoo_entry(1, 60.0, 50.0),
                                        zoo_entry(0.25, 300.0, 15.0, "mixed_bfloat16"),
                                        {"method": "rotation", "status": "failed", "error": "x"}],
              "peers": {"keras": {"runs": [{"status": "ok", "width": 0.25, "batch_size": 128, "jit": 0,
                                            "rates": _step(500.0, 25.0)}]},
                        "lightly": {"runs": [lightly_run(0.25, 1, 400.0), lightly_run(0.25, 0, 320.0),
                                             lightly_run(1, 1, 48.0), {"status": "failed"}]}}}
    rows = {(r["method"], r["width"], r["precision"]): r for r in throughput.table_rows(result)}
    w025, w1 = rows["simclr", 0.25, "float32"], rows["simclr", 1, "float32"]
    bf16 = rows["simclr", 0.25, "mixed_bfloat16"]
    assert w025["gflops_vs_w1"] == pytest.approx(30 / 50) and w1["gflops_vs_w1"] == pytest.approx(1.0)
    assert bf16["gflops_vs_w1"] is None  # width 1 was not measured in bfloat16
    assert w025["vs_lightly"] == pytest.approx(600 / 400) and w1["vs_lightly"] == pytest.approx(60 / 48)
    assert bf16["vs_lightly"] == pytest.approx(300 / 400)
    assert w025["vs_keras"] == pytest.approx(600 / 500) and w1["vs_keras"] is None
    assert rows["peer:lightly-nchw", 0.25, "float32"]["vs_lightly"] == pytest.approx(320 / 400)
    assert rows["peer:keras", 0.25, "float32"]["vs_lightly"] == pytest.approx(500 / 400)
    assert rows["peer:lightly-cl", 0.25, "float32"]["threads"] == "2,2"
    assert len(rows) == 7  # 3 zoo steps, 1 keras, 3 lightly; failures leave no row


def test_tiny_run_rows_carry_the_levers_and_the_lightly_ratio(throughput, tmp_path, monkeypatch):
    """main() with a stand-in lightly script (fake torch, torchvision and lightly on PYTHONPATH): the
    JSON and markdown rows carry width, batch, precision and threads, and `vs lightly` is the zoo's
    views/s over the fastest lightly record's imgs_per_step / median_step_s."""
    monkeypatch.setenv("PYTHONPATH", str(_fake_packages(tmp_path / "fake")))
    md = tmp_path / "R.md"
    throughput.main([*TINY_RUN, "--methods", "simclr", "--end-to-end", "0", "--peer", "lightly",
                     "--peer-dir", str(_stub_peer_dir(tmp_path / "peers")), "--lightly-python", sys.executable,
                     "--lightly-threads", "2", "--out", str(tmp_path), "--results-md", str(md), "--tag", "levers"])
    data = json.loads(next(tmp_path.glob("throughput_*_levers.json")).read_text())
    assert data["peers"]["keras"]["status"].startswith("skipped") and data["peers"]["lightly"]["status"] == "ok"
    runs = data["peers"]["lightly"]["runs"]
    option = lambda argv, name: argv[argv.index(name) + 1]  # noqa: E731
    assert sorted((option(r["record"]["argv"], "--channels-last"), option(r["record"]["argv"], "--bf16"))
                  for r in runs) == [("0", "0"), ("1", "0")]
    assert all(r["record"]["argv"][:4] == ["--width", "0.125", "--batch", "8"] for r in runs)
    fastest = max(r["record"]["imgs_per_step"] / r["record"]["median_step_s"] for r in runs)  # 16 / 0.032 s
    assert fastest == pytest.approx(500.0)

    entry = data["zoo"][0]
    assert (entry["method"], entry["width"], entry["batch_size"], entry["precision"], entry["threads"]) == \
        ("simclr", 0.125, 8, "float32", "default")
    zoo_views_per_s = 2 * 8 / entry["step"]["off"]["median_step_s"]
    rows = data["rows"]
    assert [(r["method"], r["measure"]) for r in rows] == [("simclr", "make_views"), ("simclr", "step"),
                                                           ("peer:lightly-cl", "step"), ("peer:lightly-nchw", "step")]
    step = rows[1]
    assert (step["width"], step["batch_size"], step["precision"], step["threads"], step["xla"]) == \
        (0.125, 8, "float32", "default", "off")
    assert step["vs_lightly"] == pytest.approx(zoo_views_per_s / fastest)
    assert step["gflops_vs_w1"] is None and step["vs_keras"] is None and _positive_finite(step["gflops"])
    assert rows[3]["vs_lightly"] == pytest.approx(1 / 1.25)  # the default layout against channels-last
    assert any("lightly's fastest" in line for line in data["targets"])

    lines = md.read_text().splitlines()
    assert throughput.MD_COLUMNS in lines
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| 20")]
    assert len(cells) == 4 and all(len(c) == 20 for c in cells)
    header = [c.strip() for c in throughput.MD_COLUMNS.strip("|").split("|")]
    md_step = dict(zip(header, cells[1]))
    assert (md_step["w"], md_step["b"], md_step["prec"], md_step["threads"], md_step["method"]) == \
        ("0.125", "8", "f32", "default", "simclr")
    assert float(md_step["vs lightly"]) == pytest.approx(zoo_views_per_s / fastest, abs=0.006)


def test_lightly_is_skipped_when_torch_is_missing(throughput, tmp_path, monkeypatch, capsys):
    """A Python whose `import torch` fails: no lightly run, the reason printed and recorded, and
    the table still builds."""
    fake = _fake_packages(tmp_path / "fake", "raise ModuleNotFoundError(\"No module named 'torch' (simulated)\")")
    monkeypatch.setenv("PYTHONPATH", str(fake))
    args = throughput.parse_args(["--widths", "0.125", "--batch-sizes", "8", "--peer", "lightly", "--peer-dir",
                                  str(_stub_peer_dir(tmp_path / "peers")), "--lightly-python", sys.executable])
    counted = [{"method": "simclr", "width": 0.125, "status": "ok", "encoder_macs_per_view": 1000, "feature_dim": 64}]
    peers = throughput.measure_peers(args, ["off"], counted, tmp_path)
    assert peers["lightly"]["status"] == "unavailable" and peers["lightly"]["runs"] == []
    assert "No module named 'torch'" in peers["lightly"]["reason"]
    assert "lightly peer skipped" in capsys.readouterr().out
    assert peers["keras"]["status"].startswith("skipped")
    assert throughput.table_rows({"make_views": [], "zoo": [], "peers": peers}) == []


def test_missing_peer_is_reported(throughput, tmp_path):
    args = throughput.parse_args(["--peer-dir", str(tmp_path / "nowhere")])
    assert throughput.run_keras_peer(args.peer_dir, args, 0.25, 128, 0, tmp_path)["status"] == "missing"
    setting = {"mode": "twopass", "channels_last": 1, "bf16": 0}
    assert throughput.run_lightly_peer(args.peer_dir, args, 0.25, 128, setting, tmp_path)["status"] == "missing"
    assert throughput.KERAS_MODE == "concat"  # zoo SimCLR: one forward over the 2N concatenated views


@pytest.mark.slow
def test_main_tiny_run(throughput, tmp_path):
    md = tmp_path / "R.md"
    result = throughput.main([*TINY_RUN, "--peer", "0", "--out", str(tmp_path), "--results-md", str(md),
                              "--tag", "test"])
    files = list(tmp_path.glob("throughput_*_test.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["machine"]["cpu_model"] and data["machine"]["cores"] >= 1
    assert set(data["machine"]["cpu_flags"]) >= {"avx2", "avx512f", "avx512_bf16"}
    assert data["machine"]["tensorflow"] and data["machine"]["keras"]
    assert _positive_finite(data["matmul_peak_gflops"])
    assert all(p["status"].startswith("skipped") for p in data["peers"].values())
    assert [e["method"] for e in data["zoo"]] == ["simclr", "rotation"]
    for m, vpi in zip(data["zoo"], (2, 4)):
        name = m["method"]
        assert m["status"] == "ok" and m["views_per_image"] == vpi and m["views_per_step"] == 8 * vpi
        for key in ("macs_per_view", "encoder_macs_per_view", "flops_per_step", "augment_cost_fraction"):
            assert _positive_finite(m[key]), (name, key)
        assert set(m["step"]) == {"off"}
        for row in (m["step"]["off"], m["end_to_end"]):
            for key in ("views_per_s", "images_per_s", "step_ms", "gflops", "peak_fraction", "median_step_s"):
                assert _positive_finite(row[key]), (name, key)
            assert row["views_per_s"] == pytest.approx(vpi * row["images_per_s"])
            assert len(row["step_times_s"]) == 2
    for mv in data["make_views"]:
        for key in ("views_per_s", "images_per_s", "step_ms"):
            assert _positive_finite(mv[key]), (mv["method"], key)
    # ResNet-18 heads are tiny next to the encoder.
    assert data["zoo"][0]["head_macs_per_view"] < 0.05 * data["zoo"][0]["macs_per_view"]
    assert len(data["rows"]) == 6  # make_views, step, end_to_end per method
    assert result["json_path"] == str(files[0])

    lines = md.read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| 20")]
    assert len(rows) == 6 and all("| simclr |" in r or "| rotation |" in r for r in rows)
    assert sum(ln == throughput.MD_COLUMNS for ln in lines) == 1


@pytest.mark.slow
def test_thread_settings_run_in_subprocesses(throughput, tmp_path):
    """Each --threads setting is measured by a child process that sets TF's threads before its
    first op; the child's own reading of the setting is on its rows."""
    throughput.main([*TINY_RUN, "--methods", "simclr", "--end-to-end", "0", "--threads", "1,1", "2,1",
                     "--peer", "none", "--out", str(tmp_path), "--results-md", str(tmp_path / "R.md"),
                     "--tag", "threads"])
    data = json.loads(next(tmp_path.glob("throughput_*_threads.json")).read_text())
    assert [(r["status"], r["threads"]) for r in data["threads_runs"]] == [("ok", "1,1"), ("ok", "2,1")]
    steps = [r for r in data["rows"] if r["measure"] == "step"]
    assert [r["threads"] for r in steps] == ["1,1", "2,1"] and all(_positive_finite(r["gflops"]) for r in steps)
    assert [mv["threads"] for mv in data["make_views"]] == ["1,1", "2,1"]


@pytest.mark.slow
def test_every_method_steps_on_its_own_views(throughput, tmp_path):
    """Every registered method's step on its own premade views (minutes); GFLOP/s only where
    the FLOPs are counted."""
    import zoo
    throughput.main([*TINY_RUN, "--steps", "1", "--view-batches", "1", "--methods", "all", "--end-to-end", "0",
                     "--peer", "none", "--out", str(tmp_path), "--results-md", str(tmp_path / "R.md"), "--tag", "all"])
    data = json.loads(next(tmp_path.glob("throughput_*_all.json")).read_text())
    assert {e["method"]: e.get("error") for e in data["zoo"] if e["status"] != "ok"} == {}
    assert sorted(e["method"] for e in data["zoo"]) == zoo.list_methods()
    steps = [r for r in data["rows"] if r["measure"] == "step"]
    assert len(steps) == len(zoo.list_methods()) and all(_positive_finite(r["views_per_s"]) for r in steps)
    assert all((r["gflops"] is not None) == (r["method"] in throughput.FLOPS_COUNTED) for r in steps)
    views = {e["method"]: e["views_per_image"] for e in data["zoo"]}
    assert (views["simclr"], views["rotation"], views["jigsaw"], views["npid"]) == (2, 4, 9, 1)


@pytest.fixture(scope="module")
def block_edges():
    path = SCRIPT.parent / "jpeg_block_edges.py"
    spec = importlib.util.spec_from_file_location("benchmarks_jpeg_block_edges", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_edge_ratio_by_hand(block_edges):
    import numpy as np
    # Columns rise by 1 per pixel and jump by 11 across the block edge 7|8; rows are constant.
    # Gap means over rows and columns: (0 + 1) / 2 everywhere but (0 + 11) / 2 at gap 7.
    image = np.tile(np.arange(16) + 10 * (np.arange(16) // 8), (16, 1)).astype(np.uint8)[None, :, :, None]
    ratio, gaps = block_edges.block_edge_ratio(image)
    np.testing.assert_allclose(gaps, [0.5] * 7 + [5.5] + [0.5] * 7)
    assert ratio == pytest.approx(11.0)


def test_block_edge_ratio_sees_jpeg_compression_and_not_raw_pixels(block_edges):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(0)
    # Smooth random images (5x5 noise upsampled to 32x32: no period of 8 px of their own), so
    # that blocks are visible after coding.
    smooth = tf.image.resize(rng.uniform(0, 255, (64, 5, 5, 3)).astype(np.float32), [32, 32], "bicubic")
    raw = np.clip(smooth.numpy() + rng.normal(0, 2, smooth.shape), 0, 255).astype(np.uint8)
    coded = np.stack([tf.io.decode_jpeg(tf.io.encode_jpeg(im, quality=40)).numpy() for im in raw])
    assert block_edges.block_edge_ratio(raw)[0] == pytest.approx(1.0, abs=0.05)
    assert block_edges.block_edge_ratio(coded)[0] > 1.1


def _write_run(folder, method, batch, rows, final_knn, linear):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"method: {method}\nbatch_size: {batch}\n")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.json").write_text(json.dumps({"step": rows[-1]["step"], "knn": {"top1": final_knn},
                                                  "linear": {"top1": linear}}))


def test_time_to_accuracy_table_by_hand(tmp_path):
    """Two hand-made runs: CPU-minutes = steps x the benchmark's step time rescaled to the run's
    batch; the kNN at each budget is interpolated along each curve, '-' past a curve's end."""
    spec = importlib.util.spec_from_file_location("tta", SCRIPT.parent / "time_to_accuracy.py")
    tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tta)
    # a: 2 s/step at the benchmark's batch 128, run at batch 256 -> 4 s/step; 30 steps an epoch = 2 min
    _write_run(tmp_path / "runs" / "a_resnet18w025_cifar10", "a", 256,
               [{"epoch": 1, "step": 30, "val_knn_top1": 0.40}, {"epoch": 2, "step": 60, "val_knn_top1": 0.50}],
               0.5, 0.6)
    # b: 1 s/step, batch 128; no per-epoch kNN: the final point comes from eval.json (epoch 3, 6 min)
    _write_run(tmp_path / "runs" / "b_resnet18w025_cifar10", "b", 128,
               [{"epoch": 1, "step": 120}, {"epoch": 2, "step": 240}, {"epoch": 3, "step": 360}], 0.70, 0.75)
    (tmp_path / "steps.json").write_text(json.dumps({
        "batch_size": 128, "step_seconds": {"a": 2.0, "b": 1.0}, "load_average_start": [0.1],
        "machine": {"cpu_model": "test", "widest_simd": "avx2"}}))
    (tmp_path / "random.json").write_text(json.dumps({"runs": [{"knn_top1": 0.30}, {"knn_top1": 0.32}]}))
    md, png = tmp_path / "tta.md", tmp_path / "tta.png"
    tta.main(["--step-times", str(tmp_path / "steps.json"), "--runs", str(tmp_path / "runs" / "*"),
              "--baseline", str(tmp_path / "random.json"), "--out-md", str(md), "--plot", str(png),
              "--budgets", "4,5"])
    text = md.read_text()
    # a ends at 4 min, b at 6; b at 4 min: 0.31 + (0.70 - 0.31) * 4/6 = 0.57, at 5 min: 0.31 + 0.39 * 5/6 = 0.635
    assert "| a | no | 2.00 | 2.0 | 2 | 4 | 15,360 | 1: 40.0, 2: 50.0 | 50.0 | 60.0 | 50.0 | - |" in text
    assert "| b | no | 1.00 | 2.0 | 3 | 6 | 46,080 | 3: 70.0 | 70.0 | 75.0 | 57.0 | 63.5 |" in text
    assert "kNN at 4 CPU-minutes (2 of 2 runs reach it): **b** (57.0 %), a (50.0 %)." in text
    assert "kNN at 5 CPU-minutes (1 of 2 runs reach it): **b** (63.5 %)." in text
    assert png.stat().st_size > 10_000
