"""The Markdown page of ``normreg compress`` (``report.md`` in its output folder): what was
compressed and how, the dense and compressed generators' size, latency and metrics, and
the sparsity curve and sample comparison it drew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ._files import _atomic
from .plots import save_grid
from .trainer import Trainer

__all__ = ["report_markdown", "plot_sparsity", "compare_grid"]


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def report_markdown(r: dict[str, Any]) -> str:
    """The report as a Markdown page."""
    c = r["config"]
    lines = [
        f"# Compressed generator: {c['method']}, target {c['target_macs']:g} of the MACs",
        "",
        f"From `{r['source']}` (step {r['source_step']}; {r['task']} on {r['dataset']}, {r['image_size']} px): "
        f"{c['sparse_steps'] if c['method'] != 'magnitude' else 0} sparse-training steps, "
        f"{c['finetune_steps']} fine-tuning steps, {r['seconds']:.0f} s.",
        "",
        "| | dense G | compressed G | ratio |",
        "|---|---|---|---|",
        f"| parameters | {r['dense_params']:,} | {r['params']:,} | {r['params'] / r['dense_params']:.3f} |",
        f"| MACs per image | {r['dense_macs']:,} | {r['macs']:,} | {r['mac_fraction']:.3f} |",
    ]
    for key, name in (
        ("psnr", "test PSNR (dB)"),
        ("ssim", "test SSIM"),
        ("classifier_score", "classifier score"),
        ("kid", "KID × 10³"),
    ):
        a, b = r["dense"]["test"].get(key), r["compressed"]["test"].get(key)
        if a is None and b is None:
            continue
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | |")
    base = r["dense"]["test"].get("baseline_psnr")
    lines += [
        "",
        f"Pruned {r['pruned_channels']} of {r['prunable_channels']} prunable channels; the pruned G's outputs equal "
        f"the sparse G's to {r['check_max_abs_diff']:.2g} (max abs, validation inputs)"
        + (f"; the trivial answer's test PSNR is {base:.4g} dB." if base is not None else "."),
        ""
        if r["target_met"]
        else f"**The target was not reached** ({r['mac_fraction']:.3f} > {c['target_macs']:g}).",
        "",
    ]
    if r["latency"]:
        lines += [
            "CPU latency (median ms per forward pass; the two generators took turns):",
            "",
            "| threads | batch | dense (ms) | compressed (ms) | speed-up |",
            "|---|---|---|---|---|",
        ]
    else:
        lines.append("CPU latency: not measured here (`latency=False`).")
    for row in r["latency"]:
        lines.append(
            f"| {row['threads']} | {row['batch']} | {row['dense_ms']:.3g} | {row['compressed_ms']:.3g} | {row['speedup']:.2f}x |"
        )
    if c["method"] != "magnitude":
        lines += ["", "![MACs and λ over the sparse steps](compress.png)"]
    lines += [
        "",
        "Rows: input, dense G, compressed G, target.",
        "",
        "![dense vs compressed](compare.png)",
        "",
    ]
    return "\n".join(lines)


def plot_sparsity(log: list[dict], target: float, path: Path) -> None:
    """``compress.png``: the pruned G's MAC fraction against its budget and the target, and
    the channel penalty's λ, over the sparse-training steps (written atomically)."""
    import matplotlib.pyplot as plt

    rows = [r for r in log if r["phase"] == "sparse" and "mac_fraction" in r]
    if not rows:
        return
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    steps = [r["step"] for r in rows]
    ax[0].plot(steps, [r["mac_fraction"] for r in rows], label="pruned G / dense G")
    ax[0].plot(steps, [r["budget"] for r in rows], ls=":", c="gray", label="budget (ramp)")
    ax[0].axhline(target, ls="--", c="k", lw=1, label=f"target {target:g}")
    ax[0].set(xlabel="sparse-training step", ylabel="fraction of the dense MACs", ylim=(0, 1.05))
    ax[0].legend(fontsize=8)
    ax[1].semilogy(steps, [r["lambda"] for r in rows])
    ax[1].set(xlabel="sparse-training step", ylabel="λ of the channel penalty")
    with _atomic(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def compare_grid(trainer: Trainer, dense: nn.Module, path: Path) -> None:
    """``compare.png``: the dense and the compressed G on the same inputs (rows: input,
    dense, compressed, target for paired tasks)."""
    inputs = trainer.grid_inputs
    a, b = trainer.generate(inputs, dense), trainer.generate(inputs)
    if trainer.cfg.paired:
        shown = inputs[:, : trainer.data.channels]
        if trainer.cfg.task == "completion":
            m = inputs[:, -1:]
            shown = shown * (1 - m) + m * (-0.5)
        save_grid([shown, a, b, trainer.grid_targets], path)
    else:
        save_grid([a, b], path)
