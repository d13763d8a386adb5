"""The named studies of ``normreg study``: :class:`Arm`, :class:`Study`, the two studies
(``loss-ablation``, ``weight-penalty``) and :data:`STUDIES`. Their extra measurements are in
:mod:`.studies_measure`; :mod:`.studies` runs them and :mod:`.report` writes the report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: a name for tables, a group, trainer options."""

    name: str
    options: dict
    group: str = "main"


@dataclass
class Study:
    name: str
    title: str
    question: str
    base: dict  # trainer options shared by every arm (full mode)
    arms: list[Arm]
    seeds: int = 3
    smoke: dict = field(default_factory=dict)  # options replacing base's in smoke mode
    smoke_arms: Sequence[str] | None = None  # names of the arms a smoke run keeps
    measures: tuple[str, ...] = ()  # "histogram", "sparsity", "step_time"
    time_steps: int = 0  # step_time: timed extra steps per run (full mode)

    def arms_for(self, mode: str) -> list[Arm]:
        if mode == "smoke" and self.smoke_arms is not None:
            keep = set(self.smoke_arms)
            return [a for a in self.arms if a.name in keep]
        return list(self.arms)

    def base_for(self, mode: str) -> dict:
        return {**self.base, **(self.smoke if mode == "smoke" else {})}

    def seeds_for(self, mode: str) -> list[int]:
        return [0] if mode == "smoke" else list(range(self.seeds))


# ----------------------------------------------------------------------------------------
# loss-ablation: pix2pix Table 1 on the digits completion task, and a denoising control
# ----------------------------------------------------------------------------------------
_NO_PENALTY = {"weight_penalty": "none", "weight_penalty_strength": 0.0}
_QUIET = {"eval_every": 100_000, "sample_every": 100_000, "checkpoint_every": 100_000, "log_every": 50}


def _loss_arms(task_group: str, lam: float = 100.0) -> list[Arm]:
    g = task_group
    return [
        Arm("L1", {"recon": "l1", "recon_weight": lam, "adv_weight": 0.0}, g),
        Arm("L2", {"recon": "l2", "recon_weight": lam, "adv_weight": 0.0}, g),
        Arm("GAN", {"recon": "none", "adv_weight": 1.0, "conditional_d": False}, g),
        Arm("cGAN", {"recon": "none", "adv_weight": 1.0, "conditional_d": True}, g),
        Arm("L1 + cGAN", {"recon": "l1", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True}, g),
        Arm("L2 + cGAN", {"recon": "l2", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True}, g),
    ]


def _loss_ablation() -> Study:
    completion = {"task": "completion", "mask": "bottom_half"}
    denoise = {"task": "denoise", "noise_std": 0.5}
    arms = [Arm(a.name, {**completion, **a.options}, "completion") for a in _loss_arms("completion")]
    for lam in (1.0, 10.0, 100.0, 1000.0):
        arms.append(
            Arm(
                f"L1 + cGAN, λ={lam:g}",
                {**completion, "recon": "l1", "recon_weight": lam, "adv_weight": 1.0, "conditional_d": True},
                "lambda",
            )
        )
    control = [a for a in _loss_arms("denoise") if a.name in ("L1", "L2", "cGAN", "L1 + cGAN")]
    arms += [Arm(a.name, {**denoise, **a.options}, "denoise") for a in control]
    return Study(
        name="loss-ablation",
        title="Loss ablation: L1, L2 and GAN terms for image completion",
        question=(
            "Do L1 and L2 reconstruction terms improve GAN image synthesis, and does a GAN term "
            "improve on L1/L2 alone? The pix2pix ablation (Isola et al. 2017, Table 1) on the 8x8 "
            "digits with the bottom half hidden, a λ sweep of L1 + cGAN, and a denoising control "
            "task whose answer is much less ambiguous."
        ),
        base={"dataset": "digits", "steps": 1000, "batch_size": 64, "width": 0.5, **_NO_PENALTY, **_QUIET},
        arms=arms,
        seeds=3,
        smoke={"steps": 4, "batch_size": 16, "log_every": 2, "eval_samples": 64, "max_images": 128},
        smoke_arms=["L1", "cGAN", "L1 + cGAN, λ=10", "L1 + cGAN"],
        measures=("histogram",),
    )


# ----------------------------------------------------------------------------------------
# weight-penalty: L1, L2, elastic net and L0 on G's weights, as a loss term and as a prox step
# ----------------------------------------------------------------------------------------
WEIGHT_PENALTY_LAMBDAS = (1e-3, 1e-2, 1e-1)
WEIGHT_PENALTY_MODES = ("loss", "prox")
# add_grad computes the same gradient as the loss term (one fused pass instead of autograd),
# so its images match "loss" up to rounding: it is run at one λ, for its wall time.
ADD_GRAD_LAMBDA = 1e-2


def _weight_penalty() -> Study:
    arms = [
        Arm(
            "none",
            {"weight_penalty": "none", "weight_penalty_strength": 0.0, "penalty_mode": "add_grad"},
            "none",
        )
    ]
    for pen in ("l1", "l2", "elastic_net", "l0"):
        for mode in WEIGHT_PENALTY_MODES:
            if pen == "l0" and mode != "prox":
                continue  # L0 has no gradient: only its proximal step (hard threshold) exists
            for lam in WEIGHT_PENALTY_LAMBDAS:
                arms.append(
                    Arm(
                        f"{pen} {mode} λ={lam:g}",
                        {"weight_penalty": pen, "weight_penalty_strength": lam, "penalty_mode": mode},
                        pen,
                    )
                )
            if mode == "loss":
                arms.append(
                    Arm(
                        f"{pen} add_grad λ={ADD_GRAD_LAMBDA:g}",
                        {
                            "weight_penalty": pen,
                            "weight_penalty_strength": ADD_GRAD_LAMBDA,
                            "penalty_mode": "add_grad",
                        },
                        pen,
                    )
                )
    return Study(
        name="weight-penalty",
        title="Weight penalties on G: image quality against exact sparsity, and the cost of each way",
        question=(
            "What do L1, L2, elastic-net and L0 penalties on the generator's weights do to image "
            "quality (KID, classifier score) and to the fraction of exactly-zero weights, applied as "
            "a loss term (autograd), as a fused gradient (add_grad_) or as a proximal step (ProxAdam), "
            "and what does each way cost per step?"
        ),
        base={
            "dataset": "digits",
            "task": "completion",
            "mask": "bottom_half",
            "steps": 600,
            "batch_size": 64,
            "width": 0.5,
            "recon": "l1",
            "recon_weight": 100.0,
            "adv_weight": 1.0,
            "conditional_d": True,
            "penalty_on": "g",
            # metrics must describe the network whose zeros are counted, not an average of it
            "ema_decay": 0.0,
            **_QUIET,
        },
        arms=arms,
        seeds=3,
        smoke={"steps": 4, "batch_size": 16, "log_every": 2, "eval_samples": 64, "max_images": 128},
        smoke_arms=["none", "l1 loss λ=0.01", "l1 add_grad λ=0.01", "l1 prox λ=0.01", "l0 prox λ=0.01"],
        measures=("sparsity", "step_time"),
        time_steps=30,
    )


STUDIES: dict[str, Callable[[], Study]] = {"loss-ablation": _loss_ablation, "weight-penalty": _weight_penalty}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"'name': unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]()
