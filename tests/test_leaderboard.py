"""MODEL_CARDS.md's leaderboard: one row per shipped encoder read from the reports in runs/NAME/,
the best block by linear top-1, a '-' for a protocol not run, the untrained floor row."""
import json

from export.model_card import _leaderboard_section, run_protocol_reports


def _write(folder, name, report):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(report))


def test_leaderboard_rows_from_the_run_reports(tmp_path):
    run = tmp_path / "runs" / "a_resnet18w025_cifar10"
    _write(run, "eval.json", {"knn": {"top1": 0.5}, "linear": {"top1": 0.6}})
    _write(run, "eval-mlp.json", {"mlp": {"top1": 0.65}})
    _write(run, "eval-cluster.json", {"cluster": {"accuracy": 0.3, "nmi": 0.2041, "ari": 0.1}})
    _write(run, "eval-finetune.json", {"finetune": {"subsets": [
        {"fraction": 0.01, "encoder": {"top1": 0.25}, "random_init": {"top1": 0.2}},
        {"fraction": 0.1, "encoder": {"top1": 0.45}, "random_init": {"top1": 0.3}}]}})
    _write(run, "eval-stage2.json", {"layer": "stage2", "linear": {"top1": 0.62}, "knn": {"top1": 0.1}})
    _write(run, "eval-stage3.json", {"layer": "stage3", "linear": {"top1": 0.55}})
    _write(tmp_path / "runs" / "b_resnet18w025_cifar10", "eval.json", {"knn": {"top1": 0.4}, "linear": {"top1": 0.41}})
    _write(tmp_path / "benchmarks" / "results", "random_init_cifar10.json",
           {"runs": [{"knn_top1": 0.31, "linear_top1": 0.34}, {"knn_top1": 0.32, "linear_top1": 0.33}]})

    assert set(run_protocol_reports(str(run))) == {"knn", "linear", "mlp", "cluster", "finetune"}
    metas = [{"name": "a_resnet18w025_cifar10", "method": "a"}, {"name": "b_resnet18w025_cifar10", "method": "triplet"}]
    lines = _leaderboard_section(metas, str(tmp_path))
    assert "| `a_resnet18w025_cifar10` | no | 50.00 | 60.00 | 65.00 | 25.00 | 45.00 | 62.00 (stage2) | 30.00 / 0.204 |" in lines
    # no block reports: no best block; labelled methods say so
    assert "| `b_resnet18w025_cifar10` | yes | 40.00 | 41.00 | - | - | - | - | - |" in lines
    assert "| untrained (2 seeds) | - | 31.00-32.00 | 33.00-34.00 | - | 20.00 | 30.00 | - | - |" in lines
