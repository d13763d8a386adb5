"""The plan of ``normreg study compression``: every dense and compress run (part, seed,
method, target) with its validated config, and the runs' keys. The settings it draws on are in
:mod:`.compression_records`; :mod:`.compression_runs` does one run, :mod:`.compression` runs
the plan."""

from __future__ import annotations

from dataclasses import asdict

from normreg.gan import TrainConfig
from normreg.gan.compress import COMPRESS_METHODS, CompressConfig

from .compression_records import METHODS, PARTS, SEEDS, SETUP, SMOKE, TARGETS


def _key_dense(part: str, seed: int) -> str:
    return f"{part}_s{seed}_dense"


def _key_compress(part: str, seed: int, method: str, target: float) -> str:
    return f"{part}_s{seed}_{method}_{target:g}"


def study_plan(
    mode: str = "full", parts=None, methods=None, targets=None, seeds: int | None = None
) -> list[dict]:
    """Every run of the study: ``{"key", "kind" ("dense" | "compress"), "part", "seed", ...}``,
    the dense runs first, then the compress runs seed-major (an interrupted study has every
    method at its first seeds). Configs are validated here, before anything runs."""

    if mode not in ("full", "smoke"):
        raise ValueError(f"'mode' must be 'full' or 'smoke', got {mode!r}")
    smoke = mode == "smoke"

    def pick(name: str, given, default, known) -> tuple:
        chosen = (
            tuple((given,) if isinstance(given, (str, float, int)) else given)
            if given is not None
            else default
        )
        bad = [v for v in chosen if known is not None and v not in known]
        if bad or not chosen:
            raise ValueError(
                f"'{name}': unknown or no value(s) {bad!r}; choose from {', '.join(map(repr, known))}"
            )
        return chosen

    parts = pick("parts", parts, SMOKE["parts"] if smoke else PARTS, PARTS)
    methods = pick("methods", methods, SMOKE["methods"] if smoke else METHODS, COMPRESS_METHODS)
    targets = pick("targets", targets, SMOKE["targets"] if smoke else TARGETS, None)
    n_seeds = (SMOKE["seeds"] if smoke else SEEDS) if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"'seeds' must be an int >= 1, got {seeds!r}")
    dense, comp = [], []
    for seed in range(n_seeds):
        for part in parts:
            opts = {**SETUP[part]["dense"], **(SMOKE["dense"] if smoke else {}), "seed": seed}
            cfg = TrainConfig().replace(**opts) if opts else TrainConfig()
            dense.append(
                {
                    "key": _key_dense(part, seed),
                    "kind": "dense",
                    "part": part,
                    "seed": seed,
                    "config": cfg.to_dict(),
                }
            )
            for target in targets:
                for method in methods:
                    copts = {
                        **SETUP[part]["compress"],
                        **(SMOKE["compress"] if smoke else {}),
                        "method": method,
                        "target_macs": float(target),
                    }
                    if method == "magnitude":
                        copts["sparse_steps"] = 0
                    cc = CompressConfig(**copts)  # ValueError for a bad target
                    comp.append(
                        {
                            "key": _key_compress(part, seed, method, float(target)),
                            "kind": "compress",
                            "part": part,
                            "seed": seed,
                            "method": method,
                            "target": float(target),
                            "dense_key": _key_dense(part, seed),
                            "compress_config": _asdict(cc),
                        }
                    )
    return dense + comp


def _asdict(cc) -> dict:

    return asdict(cc)
