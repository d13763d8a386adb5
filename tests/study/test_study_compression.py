"""``normreg study compression``: the plan, the resumable runner, the latency phase, the report
and its verdict rules."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest

from normreg.study.compression import SETUP, load_records, run_compression_study, study_plan
from normreg.study.compression_report import _targets, _vs_magnitude, _within_dense, summarize

pytestmark = pytest.mark.usefixtures("one_thread_and_cache")


def test_plan_covers_methods_targets_seeds_and_validates_first():
    plan = study_plan("full")
    dense = [j for j in plan if j["kind"] == "dense"]
    comp = [j for j in plan if j["kind"] == "compress"]
    assert len(dense) == 2 * 3 and len(comp) == 2 * 3 * 4 * 3
    assert {(j["part"], j["seed"]) for j in dense} == {
        (p, s) for p in ("digits", "textures") for s in range(3)
    }
    assert {j["dense_key"] for j in comp} == {j["key"] for j in dense}
    assert all(j["compress_config"]["sparse_steps"] == 0 for j in comp if j["method"] == "magnitude")
    tex = next(j for j in dense if j["part"] == "textures")["config"]
    assert (tex["dataset"], tex["task"]) == ("textures", "superres")
    assert len({j["key"] for j in plan}) == len(plan)
    with pytest.raises(ValueError, match="target_macs"):
        study_plan("full", targets=(0.5, 1.5))
    with pytest.raises(ValueError, match="'methods'"):
        study_plan("full", methods=("pruning",))
    with pytest.raises(ValueError, match="'parts'"):
        study_plan("full", parts=("faces",))
    with pytest.raises(ValueError, match="'mode'"):
        study_plan("quick")


def test_smoke_study_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "cs"
    path = run_compression_study(out, mode="smoke", jobs=2, progress=False)
    assert path == out / "report.md" and path.is_file()
    recs = load_records(out)
    comp = [r for r in recs if r["kind"] == "compress"]
    assert {r["method"] for r in comp} == {"slimming", "magnitude"}
    for r in comp:
        # the pruned G is what was measured: MACs below the budget, the equivalence check passed
        assert r["mac_fraction"] <= r["target"] + 1e-12 and r["target_met"]
        assert r["check_max_abs_diff"] <= 1e-5
        lat = json.loads((out / "latency" / f"{r['key']}.json").read_text())
        rows = {(x["batch"], x["threads"]): x for x in lat["rows"]}
        assert set(rows) == {(1, 1), (64, 1), (1, 2), (64, 2)}
        assert all(math.isclose(x["speedup"], x["dense_ms"] / x["compressed_ms"]) for x in rows.values())
    assert not (out / "runs").exists()  # keep_runs=False: checkpoints go once the grids are made
    for fig in ("pareto-macs-digits.png", "pareto-latency-digits.png", "samples-digits.png"):
        assert (out / fig).stat().st_size > 1000
    text = path.read_text()
    assert "Smoke mode" in text and "| slimming | 0.5 |" in text and "### Against magnitude pruning" in text
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(recs) and {r["kind"] for r in rows} == {"dense", "compress"}
    # a second call refuses a non-empty folder; --resume with everything done trains nothing
    with pytest.raises(ValueError, match="resume=True"):
        run_compression_study(out, mode="smoke", progress=False)
    with pytest.raises(ValueError, match="mode"):
        run_compression_study(out, mode="full", resume=True, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    (out / "report.md").unlink()
    run_compression_study(out, mode="smoke", resume=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == before
    assert (out / "report.md").is_file()


def test_study_refuses_to_delete_a_folder_that_is_not_a_study(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="no compression study"):
        run_compression_study(tmp_path, mode="smoke", overwrite=True, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _rec(kind, seed, method=None, target=None, cs=0.9, kid=10.0, psnr=18.0, mac=0.25, speedup=3.0):
    metrics = {"psnr": psnr, "ssim": 0.8, "classifier_score": cs, "kid": kid}
    if kind == "dense":
        return {"kind": "dense", "part": "digits", "seed": seed, "metrics": metrics}
    lat = {
        "rows": [
            {"batch": 64, "threads": 1, "speedup": speedup, "dense_ms": 3.0, "compressed_ms": 3.0 / speedup}
        ]
    }
    return {
        "kind": "compress",
        "part": "digits",
        "seed": seed,
        "method": method,
        "target": target,
        "mac_fraction": mac,
        "params": 25,
        "dense_params": 100,
        "target_met": mac <= target,
        "compressed": {"test": metrics},
        "latency": lat,
    }


def test_verdict_rules_on_hand_made_numbers():
    dense_cs = [0.90, 0.91, 0.89]  # mean 0.90, std 0.01: within spread down to 0.88
    recs = [_rec("dense", s, cs=c, kid=k) for s, (c, k) in enumerate(zip(dense_cs, [10.0, 12.0, 14.0]))]
    recs += [
        _rec("compress", s, "slimming", 0.25, cs=c, kid=17.0) for s, c in enumerate([0.885, 0.89, 0.895])
    ]
    recs += [
        _rec("compress", s, "magnitude", 0.25, cs=c, kid=30.0, speedup=2.0)
        for s, c in enumerate([0.85, 0.86, 0.87])
    ]
    summ = summarize(recs)["digits"]
    d = summ["dense"]
    assert math.isclose(d["mean"]["classifier_score"], 0.90) and math.isclose(
        d["std"]["classifier_score"], 0.01
    )
    ok, gap = _within_dense(d, summ["points"][("slimming", 0.25)], "classifier_score")
    assert ok and math.isclose(gap, -0.01)
    # KID: dense 12 ± 2 -> within up to 16; slimming's 17 is not, magnitude's 30 is not
    assert _within_dense(d, summ["points"][("slimming", 0.25)], "kid")[0] is False
    assert _within_dense(d, summ["points"][("magnitude", 0.25)], "classifier_score")[0] is False
    table = "\n".join(_targets(summ, ["classifier_score", "kid"], 0.25))
    assert (
        "| slimming | 0.250 ± 0.000 | yes (0.8900 ± 0.0050) | no (17.0 ± 0.0) | yes (3.00x) | no |" in table
    )
    assert "| magnitude | 0.250 ± 0.000 | no (0.860 ± 0.010) | no (30.0 ± 0.0) | no (2.00x) | no |" in table
    # slimming's classifier score is better than magnitude's beyond 2 se: 0.89 - 0.86 = 0.03,
    # se = sqrt(0.005²/3 + 0.01²/3) = 0.00645
    vm = "\n".join(_vs_magnitude(summ, ["classifier_score", "kid"]))
    se = math.sqrt(
        statistics.stdev([0.885, 0.89, 0.895]) ** 2 / 3 + statistics.stdev([0.85, 0.86, 0.87]) ** 2 / 3
    )
    assert f"better (+0.03 ± {se:.2g})" in vm
    assert "No regularized method is worse" in vm


def test_setup_parts_are_valid_train_configs():
    from normreg.gan import TrainConfig

    for part, setup in SETUP.items():
        cfg = TrainConfig().replace(**setup["dense"]) if setup["dense"] else TrainConfig()
        assert cfg.image_size in (0, 32), part
