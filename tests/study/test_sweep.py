"""normreg sweep: grid expansion, resume, selection, outputs and the best-config round trip.

The bookkeeping tests run against a test double of the trainer (tests/_fake_trainer.py)
whose metrics are a known function of the config, so every selection can be recomputed
here independently from results.csv. The smoke test at the end runs the real trainer.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from _fake_trainer import FakeConfig, FakeTrainer, fake_metrics

from normreg.study import Criterion, expand_grid, load_sweep, parse_grid, parse_value, sweep
from normreg.study._io import atomic_write_text, remove_stale_temporaries

BASE = {"task": "completion", "steps": 10, "seed": 0}
GRID = {"recon_weight": [1.0, 10.0, 100.0, 1000.0]}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def point_means(rows: list[dict], names: list[str], metric: str) -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[n] for n in names), []).append(float(r[metric]))
    return {k: statistics.fmean(v) for k, v in groups.items()}


# --- parsing and expansion -------------------------------------------------------------
def test_parse_value_types():
    assert parse_value("10") == 10 and isinstance(parse_value("10"), int)
    assert parse_value("1e-4") == pytest.approx(1e-4)
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("l1") == "l1"
    assert parse_value('"10"') == "10"


def test_parse_grid_lists_and_ranges():
    g = parse_grid(["recon_weight=1,10,100", "weight_penalty=l1,l2", "lam=log:1e-4:1e-1:4", "a=lin:0:1:3"])
    assert g["recon_weight"] == [1, 10, 100]
    assert g["weight_penalty"] == ["l1", "l2"]
    assert g["lam"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert g["a"] == pytest.approx([0.0, 0.5, 1.0])


@pytest.mark.parametrize("item", ["recon_weight", "=1,2", "x=", "x=log:0:1:3"])
def test_parse_grid_errors(item):
    with pytest.raises(ValueError, match="'grid'"):
        parse_grid([item])


def test_expand_grid_is_the_cartesian_product():
    grid = {"a": [1, 2, 3], "b": ["x", "y"], "c": [True]}
    pts = expand_grid(grid)
    assert len(pts) == 3 * 2 * 1
    assert {tuple(sorted(p.items())) for p in pts} == {
        (("a", a), ("b", b), ("c", True)) for a in [1, 2, 3] for b in ["x", "y"]
    }
    assert pts[0] == {"a": 1, "b": "x", "c": True} and pts[1] == {"a": 1, "b": "y", "c": True}


def test_expand_grid_errors():
    with pytest.raises(TypeError, match="'grid'"):
        expand_grid({"a": "l1"})
    with pytest.raises(ValueError, match="'grid'"):
        expand_grid({"a": []})


# --- the sweep with seeds and folds ------------------------------------------------------
def test_sweep_runs_every_point_seed_and_fold(tmp_path):
    fake = FakeTrainer()
    res = sweep(
        BASE,
        {"recon_weight": [1.0, 100.0], "weight_penalty": ["l1", "l2"]},
        tmp_path,
        seeds=2,
        folds=3,
        progress=False,
        plot=False,
        backend=fake.backend(),
    )
    assert len(fake.calls) == 2 * 2 * 2 * 3
    seen = {(c.recon_weight, c.weight_penalty, c.seed, c.folds, c.fold) for c in fake.calls}
    assert seen == {
        (w, p, s, 3, f) for w in [1.0, 100.0] for p in ["l1", "l2"] for s in [0, 1] for f in range(3)
    }
    rows = read_csv(res.files["results"])
    assert len(rows) == 24
    # every row's metrics are the ones of its config
    for r in rows:
        cfg = FakeConfig(
            recon_weight=float(r["recon_weight"]),
            weight_penalty=r["weight_penalty"],
            seed=int(r["seed"]),
            folds=3,
            fold=int(r["fold"]),
        )
        assert float(r["psnr"]) == pytest.approx(fake_metrics(cfg)["psnr"])
    assert "label" not in rows[0]  # non-numeric evaluate outputs are not metrics
    summ = read_csv(res.files["summary"])
    assert len(summ) == 4 and all(int(s["n_runs"]) == 6 for s in summ)
    for s in summ:
        vals = [
            float(r["kid"])
            for r in rows
            if r["recon_weight"] == s["recon_weight"] and r["weight_penalty"] == s["weight_penalty"]
        ]
        assert float(s["kid_mean"]) == pytest.approx(statistics.fmean(vals))
        assert float(s["kid_std"]) == pytest.approx(statistics.stdev(vals))


def test_explicit_seed_list(tmp_path):
    fake = FakeTrainer()
    sweep(BASE, GRID, tmp_path, seeds=[7, 11], progress=False, plot=False, backend=fake.backend())
    assert sorted({c.seed for c in fake.calls}) == [7, 11]
    assert all(c.folds == 1 for c in fake.calls)


# --- resume -----------------------------------------------------------------------------
def test_resume_reruns_only_unfinished_points(tmp_path):
    crashing = FakeTrainer(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        sweep(BASE, GRID, tmp_path, seeds=3, progress=False, backend=crashing.backend())
    finished = sorted(p.name for p in (tmp_path / "points").glob("*.json"))
    assert len(finished) == 5
    stamps = {p: (tmp_path / "points" / p).stat().st_mtime_ns for p in finished}

    with pytest.raises(ValueError, match="'out_dir'"):
        sweep(BASE, GRID, tmp_path, seeds=3, progress=False, backend=FakeTrainer().backend())

    fake = FakeTrainer()
    res = sweep(BASE, GRID, tmp_path, seeds=3, resume=True, progress=False, backend=fake.backend())
    assert len(fake.calls) == 12 - 5
    ran = {(c.recon_weight, c.seed) for c in fake.calls}
    done_before = {(c.recon_weight, c.seed) for c in crashing.calls}
    assert ran.isdisjoint(done_before) and len(ran | done_before) == 12
    for p, t in stamps.items():  # finished runs were not rewritten
        assert (tmp_path / "points" / p).stat().st_mtime_ns == t
    assert len(read_csv(res.files["results"])) == 12

    again = FakeTrainer()
    sweep(BASE, GRID, tmp_path, seeds=3, resume=True, progress=False, plot=False, backend=again.backend())
    assert again.calls == []


def test_resume_from_manifest_and_grown_grid(tmp_path):
    sweep(
        BASE,
        GRID,
        tmp_path,
        seeds=2,
        criterion="kid",
        progress=False,
        plot=False,
        backend=FakeTrainer().backend(),
    )
    fake = FakeTrainer()
    res = sweep(out_dir=tmp_path, resume=True, progress=False, plot=False, backend=fake.backend())
    assert fake.calls == [] and str(res.criterion) == "kid"
    grown = {"recon_weight": [*GRID["recon_weight"], 3.0]}
    res = sweep(
        BASE, grown, tmp_path, seeds=2, resume=True, progress=False, plot=False, backend=fake.backend()
    )
    assert sorted(c.recon_weight for c in fake.calls) == [3.0, 3.0]
    assert len(res.records) == 10


def test_overwrite_starts_again(tmp_path):
    sweep(BASE, GRID, tmp_path, progress=False, plot=False, backend=FakeTrainer().backend())
    fake = FakeTrainer()
    sweep(BASE, GRID, tmp_path, overwrite=True, progress=False, plot=False, backend=fake.backend())
    assert len(fake.calls) == 4
    with pytest.raises(ValueError, match="'resume'"):
        sweep(BASE, GRID, tmp_path, overwrite=True, resume=True, progress=False, backend=fake.backend())


# --- selection --------------------------------------------------------------------------
@pytest.mark.parametrize("metric,best", [("psnr", max), ("classifier_score", max), ("kid", min)])
def test_single_metric_selection_follows_the_metric_direction(tmp_path, metric, best):
    res = sweep(
        BASE,
        GRID,
        tmp_path,
        seeds=2,
        criterion=metric,
        progress=False,
        plot=False,
        backend=FakeTrainer().backend(),
    )
    means = point_means(read_csv(res.files["results"]), ["recon_weight"], metric)
    expected = best(means, key=means.get)
    assert res.best_options == {"recon_weight": float(expected[0])}


def test_psnr_picks_the_largest_reconstruction_weight_and_quality_does_not(tmp_path):
    # the fake mirrors the documented trap: distortion keeps improving with λ
    fake = FakeTrainer()
    res = sweep(BASE, GRID, tmp_path, criterion="psnr", progress=False, plot=False, backend=fake.backend())
    assert res.best_options["recon_weight"] == 1000.0
    res = load_sweep(tmp_path, "classifier_score+kid", backend=fake.backend())
    assert res.best_options["recon_weight"] == 10.0


def test_weighted_combination_matches_independent_zscores(tmp_path):
    grid = {"recon_weight": [1.0, 10.0, 100.0], "weight_penalty": ["none", "l1", "l2"]}
    res = sweep(
        BASE,
        grid,
        tmp_path,
        seeds=2,
        criterion="3*psnr + 1*kid",
        progress=False,
        plot=False,
        backend=FakeTrainer().backend(),
    )
    rows = read_csv(res.files["results"])
    names = ["recon_weight", "weight_penalty"]
    psnr, kid = point_means(rows, names, "psnr"), point_means(rows, names, "kid")

    def z(d):
        mu, sd = statistics.fmean(d.values()), statistics.pstdev(d.values())
        return {k: (v - mu) / sd for k, v in d.items()}

    zp, zk = z(psnr), z(kid)
    score = {k: 3 * zp[k] - 1 * zk[k] for k in psnr}
    expected = max(score, key=score.get)
    assert (str(res.best_options["recon_weight"]), res.best_options["weight_penalty"]) == (
        str(float(expected[0])),
        expected[1],
    )
    summ = {
        (s["recon_weight"], s["weight_penalty"]): float(s["score"]) for s in read_csv(res.files["summary"])
    }
    for k, v in score.items():
        assert summ[k] == pytest.approx(v)


def test_points_with_nan_metrics_are_never_selected(tmp_path):
    fake = FakeTrainer()
    real_eval = fake.evaluate

    def evaluate(run_dir, split="val"):
        m = real_eval(run_dir, split)
        cfg = json.loads((Path(run_dir) / "config.json").read_text())
        if cfg["recon_weight"] == 1000.0:
            m["psnr"] = math.nan  # a diverged run
        return m

    fake.evaluate = evaluate
    res = sweep(BASE, GRID, tmp_path, criterion="psnr", progress=False, plot=False, backend=fake.backend())
    assert res.best_options["recon_weight"] == 100.0


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty"),
        ("psnr+", "cannot read"),
        ("bogus", "unknown metric"),
        ("-1*kid", "> 0"),
        ("psnr-kid", "cannot read"),
        ("0*kid", "> 0"),
        ("psnr+psnr", "twice"),
        ({"kid": -1}, "> 0"),
    ],
)
def test_criterion_errors(spec, match):
    with pytest.raises(ValueError, match="'criterion'") as e:
        Criterion.parse(spec)
    assert match in str(e.value)


def test_criterion_directions_and_custom_metrics():
    c = Criterion.parse("2*classifier_score+kid+min:lpips+max:foo")
    assert c.terms == (("classifier_score", 2.0, 1), ("kid", 1.0, -1), ("lpips", 1.0, -1), ("foo", 1.0, 1))
    assert Criterion.parse(str(c)) == c
    with pytest.raises(TypeError, match="'criterion'"):
        Criterion.parse(3)


def test_criterion_on_missing_metric_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'criterion'.*no fid"):
        sweep(
            BASE, GRID, tmp_path, criterion="fid", progress=False, plot=False, backend=FakeTrainer().backend()
        )


# --- bad input is refused before anything runs -----------------------------------------
@pytest.mark.parametrize(
    "grid,match",
    [
        ({"recon_wieght": [1]}, "recon_weight"),
        ({"seed": [1, 2]}, "seeds"),
        ({"fold": [0]}, "folds"),
        ({"weight_penalty": ["l7"]}, "weight_penalty"),
        ({}, "empty"),
    ],
)
def test_bad_grid_is_refused_before_any_run(tmp_path, grid, match):
    fake = FakeTrainer()
    with pytest.raises(ValueError, match="'grid'") as e:
        sweep(BASE, grid, tmp_path, progress=False, backend=fake.backend())
    assert match in str(e.value)
    assert fake.calls == [] and not (tmp_path / "points").exists()


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"seeds": 0}, "'seeds'"),
        ({"seeds": [1, 1]}, "'seeds'"),
        ({"folds": 0}, "'folds'"),
        ({"folds": 2.5}, "'folds'"),
    ],
)
def test_bad_seeds_and_folds(tmp_path, kw, name):
    with pytest.raises(ValueError, match=name):
        sweep(BASE, GRID, tmp_path, progress=False, backend=FakeTrainer().backend(), **kw)


# --- outputs ----------------------------------------------------------------------------
def test_best_config_round_trips_through_toml(tmp_path):
    base = {**BASE, "weight_penalty": "l2", "weight_penalty_strength": 1e-4}
    res = sweep(
        base,
        GRID,
        tmp_path,
        seeds=2,
        folds=2,
        criterion="kid",
        progress=False,
        plot=False,
        backend=FakeTrainer().backend(),
    )
    loaded = FakeConfig.from_toml(res.files["best"])
    expected = FakeConfig(**{**base, "recon_weight": 10.0})
    assert loaded == expected  # base seed, no fold: the config to train on all the data
    text = res.files["best"].read_text()
    assert text.startswith("# Best point of a normreg sweep") and "# kid:" in text


def test_plot_is_written(tmp_path):
    res = sweep(
        BASE,
        {"recon_weight": [1.0, 10.0, 100.0], "weight_penalty": ["l1", "l2"]},
        tmp_path,
        seeds=2,
        criterion="classifier_score+kid",
        progress=False,
        backend=FakeTrainer().backend(),
    )
    data = res.files["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_progress_bar_shows_runs(tmp_path, capsys):
    sweep(BASE, GRID, tmp_path, progress=True, plot=False, backend=FakeTrainer().backend())
    err = capsys.readouterr().err
    assert "sweep" in err and "4/4" in err


def test_remove_stale_temporaries_takes_both_writers_temporaries(tmp_path):
    # study/_io's own atomic writer leaves .NAME.XXXX.tmp, the trainer's (normreg.gan._files,
    # used for a study's figures) .NAME.tmpPID.SUFFIX; both go, nothing else does
    (tmp_path / "points").mkdir()
    stale = [
        tmp_path / ".summary.json.k3j2.tmp",
        tmp_path / ".pareto.png.tmp4242.png",
        tmp_path / "points" / ".p1.json.x.tmp",
    ]
    keep = [
        tmp_path / "pareto.png",
        tmp_path / ".hidden",
        tmp_path / "points" / "p1.json",
        tmp_path / "tmp.csv",
    ]
    for p in stale + keep:
        p.write_text("x")
    atomic_write_text(tmp_path / "report.md", "r")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and (tmp_path / "report.md").read_text() == "r"
