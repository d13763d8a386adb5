"""The ``normreg`` command: train | sample | sweep | study | bench | info.

Each subcommand lives with the code it fronts and registers itself through a
``register(subparsers)`` function listed in ``_COMMANDS``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

# subcommand -> module that defines register(subparsers); a missing module is skipped.
_COMMANDS = {
    "train": "normreg.gan.cli",
    "sample": "normreg.gan.cli",
    "sweep": "normreg.study.cli",
    "study": "normreg.study.cli",
    "bench": "normreg.bench.cli",
    "info": "normreg.cli",
}


def register(sub) -> None:
    p = sub.add_parser("info", help="version, OpenMP status, threads and compiler flags")
    p.add_argument("--demo", action="store_true", help="also run a short penalty demo on a small CNN")
    p.set_defaults(func=_info)


def _info(args) -> int:
    import normreg

    info = normreg.build_info()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    if args.demo:
        _demo()
    return 0


def _demo() -> None:
    import time

    import torch

    import normreg

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    )
    model(torch.zeros(1, 1, 8, 8))
    print("\npenalties on a small CNN:", sum(p.numel() for p in model.parameters()), "parameters")
    for pen in [normreg.L1(1e-4), normreg.SquaredL2(1e-4), normreg.ElasticNet(1e-4, 1e-4), normreg.GroupLasso(1e-4)]:
        groups = normreg.param_groups(model, pen)
        t0 = time.perf_counter()
        v = pen.add_grad_(groups[0]["params"])
        dt = (time.perf_counter() - t0) * 1e6
        print(f"  {pen!r:<32} value {v:.6g}   add_grad_ {dt:.0f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="normreg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,sweep,study,bench,info}")
    done = set()
    for mod_name in dict.fromkeys(_COMMANDS.values()):
        if mod_name in done:
            continue
        done.add(mod_name)
        try:
            mod = sys.modules[__name__] if mod_name == __name__ else importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and mod_name.startswith(exc.name):
                continue  # that part of normreg is not there yet
            raise
        mod.register(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
