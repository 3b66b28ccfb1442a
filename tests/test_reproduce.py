"""train.reproduce on the fixture trees: --plan for every table, one table end to end."""
from __future__ import annotations

import json

import pytest
import torch

import fixtures_datasets as fx
from train import reproduce as R

# small, fast settings (the model code is the same at every width)
SMALL = ["--width", "0.0625", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--workers", "0"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The four releases side by side, as a user keeps them (folder names as they ship)."""
    root = tmp_path_factory.mktemp("releases")
    fx.make_casme2(root / "CASME2")
    fx.make_samm(root / "SAMM")
    fx.make_smic(root / "SMIC")
    fx.make_casme3(root / "CAS(ME)^3")
    return root


def test_find_roots_by_name_and_override(data_root, tmp_path):
    roots = R.find_roots(data_root)
    assert set(roots) == {"casme2", "samm", "smic", "casme3"} and roots["casme3"].name == "CAS(ME)^3"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert R.find_roots(data_root, [f"casme3={other}"])["casme3"] == other
    with pytest.raises(ValueError, match="NAME=PATH"):
        R.find_roots(data_root, ["casme3"])
    with pytest.raises(ValueError, match="one of"):
        R.find_roots(data_root, ["casme9=/x"])


def test_paper_figures_in_one_place():
    """Every run of every table has the paper's figure to stand beside (MOEXT.md's values)."""
    for table, runs in R.TABLES.items():
        assert all(r.name in R.PAPER[table] for r in runs), table
    assert R.PAPER[6]["cde"] == {"uf1": 0.8301, "uar": 0.8226} and R.PAPER[7]["cde"]["acc"] == 0.8417
    assert R.PAPER[3]["casme2_sde"] == {"acc": 0.8179, "uf1": 0.7825}
    assert R.PAPER[7]["cde_no_pretrain"]["uf1"] == 0.7746 and R.PAPER[7]["cde_no_motion_extractor"]["uf1"] == 0.8082


@pytest.mark.parametrize("table", [3, 4, 5, 6, 7])
def test_plan_every_table(table, data_root, tmp_path, capsys):
    plan = R.main(["--table", str(table), "--data-root", str(data_root), "--out", str(tmp_path / "out"), "--plan",
                   "--measure-steps", "1", *SMALL])
    text = capsys.readouterr().out
    assert plan["missing"] == [] and "MISSING" not in text
    runs = R.TABLES[table]
    # caches first, then one pre-training per distinct setting, then one LOSO per run
    kinds = [c.split()[2] for c in plan["commands"]]
    n_pre = len({r.pretraining for r in runs if r.pretraining})
    assert kinds == ["train.cache"] * len({d for r in runs for d in r.needs}) + ["train.pretrain"] * n_pre + \
        ["train.loso"] * len(runs)
    # pre-training is the paper's: CASME II + CAS(ME)^3, micro and macro (fixtures: 7 + 6 micro + 4 macro)
    pre = [w for w in plan["work"] if w["kind"] == "pretrain"]
    assert pre[0]["step"] == "pretrain/paper" and pre[0]["items"] == 17
    assert pre[0]["steps"] == 30 * R.steps_per_epoch(17, 4) == 30 * 4     # 4 + 4 + 4 + 4 + 1 (dropped)
    t = plan["timing"]
    assert t["pretrain_s_per_step"] > 0 and t["finetune_s_per_step"] > 0 and "time per step measured" in text
    assert all(w["seconds"] > 0 for w in plan["work"] if w["steps"])
    assert plan["disk_bytes"] == sum(d["bytes"] for d in plan["disk"]) > 0
    loso = [w for w in plan["work"] if w["kind"] == "finetune"]
    if table == 3:   # CASME II 5 classes: sub01 3, sub02 2 (fear left out), sub05 1 labelled micro samples
        assert loso[0]["items"] == 6 and loso[0]["folds"] == 3
        assert loso[0]["steps"] == 30 * sum(R.steps_per_epoch((6 - c) * 10, 4) for c in (3, 2, 1))
        assert "--pretrained" in plan["commands"][-1] and "--protocol casme2" in plan["commands"][-1]
    if table == 7:
        assert len(loso) == 6 and [w["step"] for w in pre] == [
            "pretrain/paper", "pretrain/micro_only", "pretrain/a1_0", "pretrain/a2_0"]
        assert pre[1]["items"] == 13                                          # without macro-expressions
        cmd = dict(zip([r.name for r in runs], plan["commands"][-6:]))
        assert "--no-pretrain" in cmd["cde_no_pretrain"] and "--pretrained" not in cmd["cde_no_pretrain"]
        assert "--no-motion-extractor" in cmd["cde_no_motion_extractor"]
        assert "pretrain/a1_0/" in cmd["cde_no_lst"] and "pretrain/a2_0/" in cmd["cde_no_loa"]


def test_plan_names_a_missing_release(data_root, tmp_path, capsys):
    only = tmp_path / "only_samm"
    only.mkdir()
    (only / "SAMM").symlink_to(data_root / "SAMM")
    plan = R.main(["--table", "4", "--data-root", str(only), "--out", str(tmp_path / "o"), "--plan",
                   "--measure-steps", "0"])
    assert plan["missing"] == ["casme2", "casme3"] and plan["timing"] is None
    assert "MISSING under --data-root: casme2, casme3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs casme2, casme3"):
        R.main(["--table", "4", "--data-root", str(only), "--out", str(tmp_path / "o")])


@pytest.mark.slow
def test_table5_end_to_end(data_root, tmp_path, capsys):
    """Caches -> the paper's pre-training (CASME II + CAS(ME)^3) -> LOSO on CAS(ME)^3 -> the table."""
    out = tmp_path / "paper"
    args = ["--table", "5", "--data-root", str(data_root), "--out", str(out), "--epochs", "1",
            "--pretrain-epochs", "1", "--repeats", "1", "--quiet", *SMALL]
    result = R.main(args)
    text = capsys.readouterr().out
    assert "python -m train.cache --dataset casme3" in text and "python -m train.pretrain" in text
    row = result["rows"][0]
    assert row["paper"] == {"uf1": 0.5457, "uar": 0.5784} and 0.0 <= row["ours"]["uf1"] <= 1.0
    assert "| CAS(ME)^3 (3 classes) |" in (out / "table5.md").read_text()
    assert json.loads((out / "table5.json").read_text())["rows"][0]["ours"] == row["ours"]
    report = json.loads((out / "runs" / "casme3" / "report.json").read_text())
    # CAS(ME)^3 3 classes: spNO.1 positive/negative/surprise, spNO.2 negative, spNO.3 negative
    assert report["metrics"]["overall"]["n"] == 5 and report["n_folds"] == 3
    seen = report["pretraining"]["data"]
    assert seen["datasets"] == ["casme2", "casme3"] and set(seen["kinds"]) == {"micro", "macro"}
    assert seen["seen"]["n_pairs"] == 17 and "casme2/sub01" in seen["seen"]["subjects"]
    pre = json.loads((out / "pretrain" / "paper" / "pretrain.json").read_text())
    assert pre["finished"] and sorted(pre["caches"]) == sorted(str(out / "cache" / d) for d in ("casme2", "casme3"))
    # the macro pseudo-apex in the cache is onset + 4
    index = (out / "cache" / "casme3" / "index.csv").read_text().splitlines()
    assert any(",macro," in line and ",0,4," in line for line in index)
    # run again: every step resumes, nothing is trained twice
    stamp = (out / "runs" / "casme3" / "report.json").stat().st_mtime_ns
    R.main(args)
    text = capsys.readouterr().out
    assert "already finished: skipped" in text and "0 run, 3 skipped" in text
    assert (out / "runs" / "casme3" / "folds").is_dir() and stamp <= (out / "runs" / "casme3" / "report.json").stat().st_mtime_ns
