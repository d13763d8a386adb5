"""The multi-tensor applier against a streaming torch.sum, and a per-family timing of the
public ops: a standalone script (not collected by pytest), for comparing two builds of the
extension back to back.

    python benchmarks/applier_bandwidth.py [--reps 15] [--json out.json]

* "applier": normreg._C.penalty_value (L1 and squared L2) called directly on prepared
  (pointer, numel, dtype) lists, so the time is the applier's pass, not the Python bridge;
  its GB/s is divided by that of torch.sum over one contiguous float32 buffer of the same
  bytes, timed in the same rounds ("of sum").
* "ops": one call of each family through the public API (value, add_grad_, prox_,
  ProxSGD / ProxAdam steps, image losses), best of --reps.
Workloads: one tensor of 25M float32 elements, and 300 float32 tensors of mixed sizes
(log-uniform, 256 to 1M elements; about 100 MB).
"""

# ruff: noqa: B023  (every lambda below is called inside the iteration that made it)
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import normreg
from normreg import _C


def best(fn, reps: int) -> float:
    fn()
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def workloads() -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    sizes = [
        int(math.exp(x))
        for x in torch.empty(300).uniform_(math.log(256), math.log(1 << 20), generator=g).tolist()
    ]
    return {
        "big25m": [torch.randn(25_000_000, generator=g)],
        "mixed300": [torch.randn(n, generator=g) for n in sizes],
    }


def applier_rows(ws, reps):
    rows = []
    for name, ts in ws.items():
        ptrs = [t.data_ptr() for t in ts]
        numels = [t.numel() for t in ts]
        dtypes = [0] * len(ts)
        nbytes = sum(numels) * 4
        probe = torch.ones(nbytes // 4)
        for kind in ("l1", "squared_l2"):
            f = lambda: _C.penalty_value(kind, ptrs, numels, dtypes, [1e-4], [1e-4])  # noqa: E731
            # alternate the two in rounds so a drifting machine hits both alike
            tn = tp = float("inf")
            for _ in range(3):
                tn = min(tn, best(f, reps))
                tp = min(tp, best(probe.sum, reps))
            rows.append(
                {
                    "kind": "applier",
                    "workload": name,
                    "op": kind,
                    "s": tn,
                    "gbs": nbytes / tn / 1e9,
                    "sum_gbs": nbytes / tp / 1e9,
                    "of_sum": tp / tn,
                }
            )
    return rows


def op_rows(ws, reps):
    rows = []
    for name, ts in ws.items():
        params = [t.clone().requires_grad_() for t in ts]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        sgd = normreg.optim.ProxSGD(params, lr=1e-3, momentum=0.9, penalty=normreg.L1(1e-5))
        adam = normreg.optim.ProxAdam(params, lr=1e-4, penalty=normreg.L1(1e-5))
        cases = {
            "l1-value": lambda: normreg.L1(1e-4).value(params),
            "sql2-value": lambda: normreg.SquaredL2(1e-4).value(params),
            "enet-value": lambda: normreg.ElasticNet(1e-4, 1e-4).value(params),
            "l1-grad": lambda: normreg.L1(1e-4).add_grad_(params),
            "enet-grad": lambda: normreg.ElasticNet(1e-4, 1e-4).add_grad_(params),
            "l1-prox": lambda: normreg.L1(1e-9).prox_(params, 1e-3),
            "group-value": lambda: normreg.GroupLasso(1e-4, dim=0).value(
                [p.view(-1, 16) if p.numel() % 16 == 0 else p.view(1, -1) for p in params]
            ),
            "proxsgd-step": sgd.step,
            "proxadam-step": adam.step,
        }
        with torch.no_grad():
            for op, f in cases.items():
                rows.append({"kind": "ops", "workload": name, "op": op, "s": best(f, reps)})
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 128, 128, generator=g, requires_grad=True)
    y = torch.rand(32, 3, 128, 128, generator=g)

    def l1_grad():
        normreg.losses.l1_loss(x, y).backward()

    def tv_grad():
        normreg.losses.total_variation(x).sum().backward()

    for op, f in {
        "l1-loss": lambda: normreg.losses.l1_loss(x, y),
        "l1-loss+grad": l1_grad,
        "mse-loss": lambda: normreg.losses.mse_loss(x, y),
        "tv-loss": lambda: normreg.losses.total_variation(x),
        "tv-loss+grad": tv_grad,
    }.items():
        rows.append({"kind": "ops", "workload": "images", "op": op, "s": best(f, reps)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", choices=("applier", "ops"))
    a = ap.parse_args()
    ws = workloads()
    rows = []
    if a.only != "ops":
        rows += applier_rows(ws, a.reps)
    if a.only != "applier":
        rows += op_rows(ws, a.reps)
    for r in rows:
        extra = (
            f"  {r['gbs']:.2f} GB/s, sum {r['sum_gbs']:.2f} GB/s, of sum {r['of_sum']:.1%}"
            if r["kind"] == "applier"
            else ""
        )
        print(f"{r['kind']:8s} {r['workload']:9s} {r['op']:14s} {r['s'] * 1e3:9.3f} ms{extra}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"threads": torch.get_num_threads(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
