"""benchmarks/throughput.py: the analytic FLOP counter and a tiny end-to-end run of main()."""
import importlib.util
import json
import math
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


def test_main_tiny_run(throughput, tmp_path):
    md = tmp_path / "R.md"
    result = throughput.main(["--width", "0.125", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                              "--xla", "off", "--peer", "0", "--out", str(tmp_path), "--results-md", str(md),
                              "--matmul-size", "256", "--num-images", "64", "--view-batch-size", "16",
                              "--view-batches", "2", "--tag", "test"])
    files = list(tmp_path.glob("throughput_*_test.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["machine"]["cpu_model"] and data["machine"]["cores"] >= 1
    assert set(data["machine"]["cpu_flags"]) >= {"avx2", "avx512f", "avx512_bf16"}
    assert data["machine"]["tensorflow"] and data["machine"]["keras"]
    assert _positive_finite(data["matmul_peak_gflops"])
    assert data["peer"]["status"].startswith("skipped")
    assert set(data["methods"]) == {"simclr", "rotation"}
    for name, vpi in (("simclr", 2), ("rotation", 4)):
        m = data["methods"][name]
        assert m["views_per_image"] == vpi and m["views_per_step"] == 8 * vpi
        for key in ("macs_per_view", "encoder_macs_per_view", "flops_per_step", "augment_cost_fraction"):
            assert _positive_finite(m[key]), (name, key)
        assert set(m["step"]) == {"off"}
        for row in (m["step"]["off"], m["end_to_end"]):
            for key in ("views_per_s", "images_per_s", "step_ms", "gflops", "peak_fraction", "median_step_s"):
                assert _positive_finite(row[key]), (name, key)
            assert row["views_per_s"] == pytest.approx(vpi * row["images_per_s"])
            assert len(row["step_times_s"]) == 2
        for key in ("views_per_s", "images_per_s", "step_ms"):
            assert _positive_finite(m["make_views"][key]), (name, key)
    # ResNet-18 heads are tiny next to the encoder.
    assert data["methods"]["simclr"]["head_macs_per_view"] < 0.05 * data["methods"]["simclr"]["macs_per_view"]
    assert len(data["rows"]) == 6  # make_views, step, end_to_end per method
    assert result["json_path"] == str(files[0])

    lines = md.read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| 20")]
    assert len(rows) == 6 and all("| simclr |" in r or "| rotation |" in r for r in rows)
    assert any(ln.startswith("| run | tag |") for ln in lines)


def test_missing_peer_is_reported(throughput, tmp_path):
    args = throughput.parse_args(["--peer-dir", str(tmp_path / "nowhere")])
    assert throughput.run_peer(args.peer_dir, args, 0, tmp_path)["status"] == "missing"
    assert throughput.PEER_MODE == "concat"  # zoo SimCLR: one forward over the 2N concatenated views


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
    batch; the kNN at the common budget is interpolated along each curve."""
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
              "--baseline", str(tmp_path / "random.json"), "--out-md", str(md), "--plot", str(png)])
    text = md.read_text()
    # budget = min(4 min for a, 6 min for b) = 4; b at 4 min: 0.31 + (0.70 - 0.31) * 4/6 = 0.57
    assert "| a | no | 2.00 | 2.0 | 2 | 4 | 15,360 | 1: 40.0, 2: 50.0 | 50.0 | 60.0 | 50.0 |" in text
    assert "| b | no | 1.00 | 2.0 | 3 | 6 | 46,080 | 3: 70.0 | 70.0 | 75.0 | 57.0 |" in text
    assert "**b** (57.0 %)" in text
    assert png.stat().st_size > 10_000
