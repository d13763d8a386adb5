"""normreg bench: the CLI in its tiny mode, the agreement gate, timing hygiene, the report.

No test asserts a timing: only that the machinery runs, that its output is well formed
and self-consistent, and that a wrong implementation is refused before it is timed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import normreg
import normreg.cli
from normreg.bench import cases as cases_mod
from normreg.bench import cli, report, runner
from normreg.bench.cases import Case, Impl, Inputs, build_cases
from normreg.bench.cases._common import _snapshot as snapshot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _wrong_value_peer(case: Case, factor: float = 1.01) -> Impl:
    """A peer that is the eager peer scaled by ``factor``: wrong by 1% (rtol is 1e-4)."""
    eager = case.impl("torch-eager")

    def bind(inp):
        thunk = eager.bind(inp)
        return lambda: thunk() * factor

    return Impl("torch-wrong", bind)


# -- the CLI, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    md = d / "perf.md"
    md.write_text(f"# perf\n\nintro\n\n{report.BEGIN}\nPLACEHOLDER\n{report.END}\n\nafter\n")
    paths = {"json": d / "r.json", "png": d / "r.png", "md": md}
    rc = normreg.cli.main(
        [
            "bench",
            "--tiny",
            "--threads",
            "1,2",
            "--json",
            str(paths["json"]),
            "--plot",
            str(paths["png"]),
            "--markdown",
            str(md),
        ]
    )
    return rc, paths


def test_tiny_run_exits_cleanly_and_writes_all_outputs(tiny_run):
    rc, paths = tiny_run
    assert rc == 0
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    text = paths["md"].read_text()
    assert "PLACEHOLDER" not in text
    assert text.startswith("# perf\n\nintro\n\n" + report.BEGIN) and text.endswith(report.END + "\n\nafter\n")
    assert "| normreg time |" in text and "| probe GB/s | of probe |" in text and "r.png" in text


def test_tiny_run_json_is_well_formed(tiny_run):
    _, paths = tiny_run
    r = json.loads(paths["json"].read_text())
    assert {
        "machine",
        "bandwidth",
        "settings",
        "cases",
        "errors",
        "threads",
        "training_step",
    } <= set(r)
    assert r["errors"] == []
    assert r["bandwidth"]["read_gbs"] > 0 and r["bandwidth"]["rw_gbs"] > 0
    families = {c["family"] for c in r["cases"]}
    assert families == set(cases_mod.FAMILIES)  # every family ran
    for c in r["cases"]:
        assert "normreg" in c["results"] and len(c["results"]) >= 2, c["group"]
        ours = c["results"]["normreg"]["best_s"]
        for name, res in c["results"].items():
            assert res["best_s"] > 0 and res["median_s"] >= res["best_s"]
            assert res["gbs"] == pytest.approx(c["nbytes"] / res["best_s"] / 1e9)
            # the share is taken against the probe timed alongside (all but the overhead cases)
            assert ("probe_gbs" in c) == (c["family"] != "per-call overhead"), c["group"]
            if "probe_gbs" in c:
                assert res["fraction_of_bandwidth"] == pytest.approx(res["gbs"] / c["probe_gbs"])
            else:  # no same-size probe, no share
                assert "fraction_of_bandwidth" not in res
            if name != "normreg":
                assert c["speedup"][name] == pytest.approx(res["best_s"] / ours)
    for s in r["threads"]:
        assert s["counts"] == [1, 2]
        for d in s["impls"].values():
            assert d["ratio"]["1"] == pytest.approx(1.0)
            assert d["ratio"]["2"] == pytest.approx(d["best_s"]["1"] / d["best_s"]["2"])
    ts = r["training_step"]
    for v in ("normreg", "normreg-add_grad", "torch-eager"):
        assert ts["share"][v] < 1
        assert ts["share"][v] == pytest.approx(ts["variants"][v]["penalty_s"] / ts["variants"][v]["best_s"])
        assert ts["share_ratios"].get(v, ts["share"][v] / ts["share"]["torch-eager"]) == pytest.approx(
            ts["share"][v] / ts["share"]["torch-eager"]
        )
    for v in ("normreg-add_grad", "torch-eager"):  # timed directly: positive
        assert ts["share"][v] > 0
    # the fused penalty's cost is a difference of optimizer-step times (it may be noise-small)
    opt = ts["optimizer_step"]
    assert opt["with_penalty_s"] > 0 and opt["without_penalty_s"] > 0
    assert ts["variants"]["normreg"]["penalty_s"] == pytest.approx(
        opt["with_penalty_s"] - opt["without_penalty_s"]
    )
    # the trainer's own cost: a normreg train step against a bare loop over the same models
    o = r["trainer_overhead"]
    assert o["trainer_step_s"] > 0 and o["bare_step_s"] > 0
    assert o["ratio"] == pytest.approx(o["trainer_step_s"] / o["bare_step_s"])
    # the saved run redraws without re-running
    assert report.main([str(paths["json"])]) == 0


def test_every_column_the_report_names_is_printed_and_no_internal_targets(tiny_run, capsys):
    _, paths = tiny_run
    r = json.loads(paths["json"].read_text())
    text = report.format_all(r)
    header = next(line for line in text.splitlines() if line.startswith("family"))
    for col in report.HEADER:
        assert col in header, col
    named = [p.split("'")[1] for p in text.split("column '")[1:]]  # "the column 'X'" mentions
    assert all(n in header for n in named)
    assert "target" not in text and "probe GB/s" in header
    for c in r["cases"]:
        if "probe_gbs" in c:
            assert isinstance(c["probe_in_cache"], bool)
            assert ("(cache)" if c["probe_in_cache"] else "(memory)") in report._probe_cell(c)
    assert "trainer takes" in text


def test_bad_arguments_are_refused_with_the_option_named(capsys):
    assert normreg.cli.main(["bench", "--tiny", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert normreg.cli.main(["bench", "--tiny", "--families", "nope"]) == 2
    assert "--families" in capsys.readouterr().err
    assert normreg.cli.main(["bench", "--tiny", "--workloads", "dcgan,huge"]) == 2
    assert "--workloads" in capsys.readouterr().err


def test_list_names_every_case(capsys):
    assert normreg.cli.main(["bench", "--list", "--workloads", "tiny1", "--families", "penalty value"]) == 0
    out = capsys.readouterr().out
    assert "l1-value/tiny1" in out and "torch-foreach" in out


# -- the agreement gate --------------------------------------------------------------------


@pytest.mark.parametrize("family", list(cases_mod.FAMILIES))
def test_every_peer_agrees_with_normreg(family):
    cases = build_cases([family], ["tiny200"], image_shape=(2, 3, 8, 8))
    assert cases
    for case in cases:
        runner.check_agreement(case)  # raises AgreementError on any disagreement


def test_wrong_peer_is_refused_before_anything_is_timed(monkeypatch):
    (case,) = build_cases(["penalty value"], ["tiny200"])[:1]
    case.peers.append(_wrong_value_peer(case))
    timed = []
    monkeypatch.setattr(runner, "_Timer", lambda c, impl, *a, **kw: timed.append(impl.name))
    with pytest.raises(runner.AgreementError, match="torch-wrong") as info:
        runner.run_case(case, reps=1)
    assert info.value.impl == "torch-wrong" and info.value.group == case.group
    assert timed == []  # not even the correct implementations were timed


def test_wrong_normreg_is_refused_too():
    (case,) = build_cases(["value+grad"], ["tiny200"])[:1]
    real = case.ours

    def bind(inp):
        thunk = real.bind(inp)

        def run():
            v = thunk()
            inp.params[0].grad.add_(1.0)  # a wrong gradient, right value
            return v

        return run

    case.ours = Impl("normreg", bind)
    with pytest.raises(runner.AgreementError, match="disagrees"):
        runner.check_agreement(case)


def test_a_small_disagreement_within_tolerance_passes():
    (case,) = build_cases(["penalty value"], ["tiny200"])[:1]
    case.peers = [_wrong_value_peer(case, factor=1 + case.tol[0] / 10)]
    runner.check_agreement(case)


def test_keep_going_reports_the_error_and_leaves_the_row_out(monkeypatch, tmp_path, capsys):
    real = cases_mod.FAMILIES["penalty value"]

    def with_wrong_peer(wls, compile, image_shape):
        out = real(wls, compile, image_shape)
        out[0].peers.append(_wrong_value_peer(out[0]))
        return out

    monkeypatch.setitem(cases_mod.FAMILIES, "penalty value", with_wrong_peer)
    path = tmp_path / "r.json"
    args = [
        "bench",
        "--tiny",
        "--families",
        "penalty value",
        "--no-scaling",
        "--no-train-step",
        "--json",
        str(path),
    ]
    assert normreg.cli.main(args) == 1  # stops at the first disagreement
    assert "torch-wrong disagrees" in capsys.readouterr().err
    assert not path.exists()
    assert normreg.cli.main([*args, "--keep-going"]) == 1
    r = json.loads(path.read_text())
    assert len(r["errors"]) == 1 and "torch-wrong" in r["errors"][0]
    bad_group = r["errors"][0].split(":")[0]
    assert bad_group not in {c["group"] for c in r["cases"]}
    assert len(r["cases"]) == 2  # the other two penalties of the family were timed


# -- timing hygiene ------------------------------------------------------------------------


def test_inplace_inputs_are_restored_before_every_repetition():
    seen = []

    def bind(inp):
        def run():
            seen.append(inp.x.clone())
            inp.x.mul_(0.5).add_(1.0)

        return run

    case = Case(
        family="test",
        op="affine",
        workload="tiny1",
        make_inputs=lambda: Inputs(x=torch.arange(4.0)),
        ours=Impl("normreg", bind),
        peers=[],
        result=lambda inp, ret: inp.x,
        nbytes=32,
        restore=lambda inp: snapshot([inp.x]),
    )
    t = runner.time_impl(case, case.ours, warmup=2, reps=4)
    assert t.number == 1 and t.reps == 4
    assert len(seen) == 6
    for x in seen:
        torch.testing.assert_close(x, torch.arange(4.0), rtol=0, atol=0)


def test_threads_context_sets_both_libraries_and_restores():
    t0, o0 = torch.get_num_threads(), normreg.get_num_threads()
    with runner.threads(1):
        assert torch.get_num_threads() == 1 and normreg.get_num_threads() == 1
    assert torch.get_num_threads() == t0 and normreg.get_num_threads() == o0


def test_thread_counts_start_at_one_and_include_two():
    assert runner.thread_counts(1) == [1, 2]
    assert runner.thread_counts(2) == [1, 2]
    assert runner.thread_counts(6) == [1, 2, 4, 6]
    assert runner.thread_counts(8) == [1, 2, 4, 8]


# -- report --------------------------------------------------------------------------------


def test_overhead_splits_fixed_and_per_tensor_cost():
    def case(wl, t):
        return {
            "family": "per-call overhead",
            "op": "l1-value",
            "workload": wl,
            "results": {"normreg": {"best_s": t}},
        }

    fixed, per = 3e-6, 5e-8
    r = {"cases": [case("tiny1", fixed + per), case("tiny200", fixed + 200 * per)]}
    (o,) = report.overhead(r)
    assert o["per_tensor_s"] == pytest.approx(per)
    assert o["fixed_s"] == pytest.approx(fixed + per)


def test_update_markdown_needs_the_markers(tmp_path):
    p = tmp_path / "x.md"
    p.write_text("no markers here\n")
    with pytest.raises(ValueError, match="markdown"):
        report.update_markdown(str(p), "table")
    assert p.read_text() == "no markers here\n"


def test_plot_refuses_results_without_speedups(tmp_path):
    with pytest.raises(ValueError, match="results"):
        report.plot_speedups({"cases": []}, str(tmp_path / "x.png"))


def test_run_bench_rejects_bad_mode_and_reps():
    with pytest.raises(ValueError, match="mode"):
        cli.run_bench("fast")
    with pytest.raises(ValueError, match="reps"):
        cli.run_bench("tiny", reps=0)


def test_speedup_is_peer_over_ours():
    res = runner.CaseResult("f", "op", "wl", "op/wl", 8, "read", (0, 0))
    res.timings = {"normreg": runner.Timing(2.0, 2.0, 1, 1), "torch-eager": runner.Timing(6.0, 6.0, 1, 1)}
    assert res.speedups() == {"torch-eager": 3.0}
    d = res.as_dict()
    assert math.isclose(d["results"]["normreg"]["gbs"], 8 / 2.0 / 1e9)


def test_performance_doc_has_one_results_section():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "performance.md"
    text = doc.read_text(encoding="utf-8")
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert text.index(report.BEGIN) < text.index(report.END)


def test_implementations_take_turns(monkeypatch):
    # run_case times the implementations side by side: rounds of ROUND repetitions, each
    # round after one untimed call, until each has `reps`.
    (case,) = build_cases(["penalty value"], ["tiny200"])[:1]
    events = []

    class Fake:
        def __init__(self, c, impl, *a, **kw):
            self.name, self.number = impl.name, 1

        def warm(self):
            events.append((self.name, "warm"))

        def rep(self):
            events.append((self.name, "rep"))
            return 1.0 + len(events)

    monkeypatch.setattr(runner, "_Timer", Fake)
    res = runner.run_case(case, reps=5)
    names = [i.name for i in case.impls]
    assert set(res.timings) == set(names)
    assert all(res.timings[n].reps == 5 for n in names)
    reps = [n for n, kind in events if kind == "rep"]
    assert [reps.count(n) for n in names] == [5] * len(names)
    # first round: each name ROUND times in a row, in order, with no warm call before it
    r = runner.ROUND
    assert reps[: r * len(names)] == [n for n in names for _ in range(r)]
    assert sum(1 for _, kind in events if kind == "warm") == len(names) * 2  # before rounds 2 and 3
    for n in names:  # the best is the smallest of its own repetitions
        own = [1.0 + i + 1 for i, (m, kind) in enumerate(events) if m == n and kind == "rep"]
        assert res.timings[n].best_s == min(own)


def test_bandwidth_probe_has_the_case_size_takes_turns_and_sets_the_share(monkeypatch):
    # a probe of the case's own size is one more turn-taker of the case; the shares use its
    # best, not the bandwidth measured at the start of the run
    from normreg.bench import bandwidth
    from normreg.bench.bandwidth import Bandwidth, Probe

    (case,) = build_cases(["penalty value"], ["tiny200"])[:1]
    made = []

    class Counting(Probe):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.calls = 0
            made.append(self)

        def read(self):
            self.calls += 1
            super().read()

    res = runner.run_case(case, reps=5, probe=Counting)
    (probe,) = made
    assert probe.moved("read") == max(4, case.nbytes // 4 * 4) and probe.in_cache  # a few KB
    assert runner.PROBE not in res.timings
    assert res.probe_gbs is not None and res.probe_gbs > 0 and res.probe_in_cache is True
    d = res.as_dict(Bandwidth(read_gbs=1e-9, rw_gbs=1e-9, buffer_mb=4, threads=1))
    assert d["probe_gbs"] == res.probe_gbs and d["probe_in_cache"] is True
    for row in d["results"].values():
        assert row["fraction_of_bandwidth"] == pytest.approx(row["gbs"] / res.probe_gbs)
    assert probe.calls > 5  # set-up, calibration, warm calls and the repetitions
    # a read+write probe moves the case's bytes in one pass; a buffer over the cache is "memory"
    assert Probe.same_size(8 << 20, "rw").moved("rw") == 8 << 20
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 1 << 20)
    assert not Probe.same_size(4 << 20, "read").in_cache and Probe.same_size(1 << 19, "read").in_cache
    # a case with no bandwidth kind is not probed
    case.bw_kind = "none"
    assert runner.run_case(case, reps=1, probe=Probe).probe_gbs is None
    with pytest.raises(ValueError, match="'mb'"):
        Probe(mb=0)
    with pytest.raises(ValueError, match="'kind'"):
        Probe.same_size(64, "write")


def test_thread_counts_take_turns(monkeypatch):
    # thread_scaling times every (implementation, thread count) in rounds, each under its
    # own thread count, so a drift of the machine cannot masquerade as (non-)scaling
    (case,) = build_cases(["penalty value"], ["tiny200"])[:1]
    events = []

    class Fake:
        def __init__(self, c, impl, *a, **kw):
            self.name, self.number = impl.name, 1
            self.made_at = torch.get_num_threads()

        def warm(self):
            events.append((self.name, torch.get_num_threads(), "warm"))

        def rep(self):
            assert torch.get_num_threads() == self.made_at  # timed under its own count
            events.append((self.name, torch.get_num_threads(), "rep"))
            return 1.0 / torch.get_num_threads() + 1e-6 * len(events)

    monkeypatch.setattr(runner, "_Timer", Fake)
    before = torch.get_num_threads()
    out = runner.thread_scaling(case, [1, 2], reps=4)
    assert torch.get_num_threads() == before
    reps = [(n, k) for n, k, kind in events if kind == "rep"]
    keys = [(n, k) for n in ("normreg", "torch-eager") for k in (1, 2)]
    r = runner.ROUND
    assert reps[: r * len(keys)] == [key for key in keys for _ in range(r)]  # first round
    assert reps[r * len(keys) :] == [key for key in keys for _ in range(r)]  # second round
    for name in ("normreg", "torch-eager"):
        d = out["impls"][name]
        assert d["ratio"]["2"] == pytest.approx(d["best_s"]["1"] / d["best_s"]["2"])
        assert d["ratio"]["2"] == pytest.approx(2.0, rel=1e-3)
