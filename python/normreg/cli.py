"""The ``normreg`` command: train | sample | compress | sweep | study | bench | info.

Each subcommand lives with the code it fronts and registers itself through a
``register(subparsers)`` function listed in ``_COMMANDS``; this module only dispatches.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import time

import torch

import normreg
from normreg.gan.config import _field_names

__all__ = ["main"]

# subcommand -> module that defines register(subparsers); a missing module is skipped.
_COMMANDS = {
    "train": "normreg.gan.cli",
    "sample": "normreg.gan.cli",
    "compress": "normreg.gan.cli",
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
    info = normreg.build_info()
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    if args.demo:
        _demo()
    return 0


def _demo() -> None:

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(10),
    )
    model(torch.zeros(1, 1, 8, 8))
    print("\npenalties on a small CNN:", sum(p.numel() for p in model.parameters()), "parameters")
    for pen in [
        normreg.L1(1e-4),
        normreg.SquaredL2(1e-4),
        normreg.ElasticNet(1e-4, 1e-4),
        normreg.GroupLasso(1e-4),
    ]:
        groups = normreg.param_groups(model, pen)
        t0 = time.perf_counter()
        v = pen.add_grad_(groups[0]["params"])
        dt = (time.perf_counter() - t0) * 1e6
        print(f"  {pen!r:<32} value {v:.6g}   add_grad_ {dt:.0f} us")


class _Parser(argparse.ArgumentParser):
    """Every ``normreg`` parser: no abbreviated flags (``--step 10`` is not ``--steps 10``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


# Subcommands whose trainer options go through --set NAME=VALUE rather than flags of their own.
_SET_COMMANDS = {"sweep", "study"}


def _unknown_message(command: str, parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments`` with, for each unknown flag, the close match or the --set form."""

    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    unknown = [e for e in extras if e.startswith("-")]
    for i, e in enumerate(extras):
        if not e.startswith("-"):
            continue
        name, eq, val = e.partition("=")
        if not eq and i + 1 < len(extras) and not extras[i + 1].startswith("-"):
            val = extras[i + 1]
        field = _train_field(name[2:]) if command in _SET_COMMANDS and name.startswith("--") else None
        if field is not None:
            if "--set" in flags:
                hints.append(f"{name} is a trainer option: use --set {field}={val or 'VALUE'}")
            else:
                hints.append(
                    f"{name} is a trainer option, which the {command}'s arms set (normreg {command} --list)"
                )
            continue
        close = difflib.get_close_matches(name, flags, n=2, cutoff=0.6)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    msg = f"unrecognized arguments: {' '.join(extras)}"
    if hints:
        msg += "\n  " + "\n  ".join(hints)
    elif unknown:
        msg += f" (see normreg {command} --help)"
    return msg


def _train_field(name: str) -> str | None:
    field = name.replace("-", "_")
    return field if field in _field_names() else None


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="normreg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(
        dest="command", metavar="{train,sample,compress,sweep,study,bench,info}", parser_class=_Parser
    )
    done = set()
    for mod_name in dict.fromkeys(_COMMANDS.values()):
        if mod_name in done:
            continue
        done.add(mod_name)
        mod = sys.modules[__name__] if mod_name == __name__ else importlib.import_module(mod_name)
        mod.register(sub)
    args, extras = parser.parse_known_args(argv)
    if extras:
        cmd = getattr(args, "command", None)
        target = sub.choices.get(cmd, parser) if cmd else parser
        target.error(_unknown_message(cmd or "", target, extras))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
