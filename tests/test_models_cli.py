"""`zoo-models` (trainers/models_cli.py): the shipped encoders as a table, filtered, or as JSON.
Reference: zoo.describe of each name, formatted here by hand."""
import json

import zoo
from trainers.models_cli import main


def _rows(text):
    """The table's data rows as lists of cells (columns are 2+ spaces apart), up to the blank line."""
    lines = text.split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines[1:]]


def test_table_has_a_row_per_encoder_matching_describe(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["name", "method", "labels?"] and header[-1] == "epochs"
    rows = _rows(out)
    assert [row[0].rstrip(" *") for row in rows] == zoo.list_models()
    for row in rows:
        info = zoo.describe(row[0].rstrip(" *"))
        expected = [info["name"] + (" *" if info["caveat"] else ""), info["method"],
                    "yes" if info["uses_labels"] else "no", f"{info['parameters'] / 1e6:.2f}M",
                    str(info["image_size"]), str(info["feature_dim"]), f"{100 * info['knn_top1']:.1f}%",
                    f"{100 * info['linear_top1']:.1f}%", str(info["epochs"])]
        assert row == expected
        if info["caveat"]:
            assert f"* {info['name']}: {info['caveat']}" in out
    simclr = next(row for row in rows if row[0] == "simclr_resnet18w025_cifar10")
    assert simclr[3:7] == ["0.70M", "32", "128", "54.5%"]  # 702,576 parameters; the README's 0.5452


def test_filters_and_json(capsys):
    assert main(["--method", "supcon", "--dataset", "cifar10"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["supcon_resnet18w025_cifar10"] and rows[0][2] == "yes"
    assert main(["--dataset", "cifar10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [zoo.describe(name) for name in zoo.list_models(dataset="cifar10")]


def test_no_match_is_an_error_naming_what_ships(capsys):
    assert main(["--method", "simclr", "--dataset", "imagenet"]) == 1
    err = capsys.readouterr().err
    assert "--dataset imagenet" in err and "simclr" in err and "cifar10" in err
