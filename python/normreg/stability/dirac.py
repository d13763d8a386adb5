"""Dirac-GAN (Mescheder, Geiger & Nowozin, ICML 2018) run through normreg's own pieces.

Data: the point mass δ₀. Generator: G = δ_θ (one parameter θ). Discriminator: D(x) = ψ·x
(``nn.Linear(1, 1, bias=False)``, weight ψ). The only equilibrium is (θ, ψ) = (0, 0).

Losses (each network minimizes its own; ``loss=``):

* ``"bce"`` (the minimax GAN): ℓ_D = softplus(-D(0)) + softplus(D(θ)) = log 2 + softplus(ψθ),
  ℓ_G = -softplus(ψθ);
* ``"nonsaturating"``: the same ℓ_D, ℓ_G = softplus(-ψθ);
* ``"linear"`` (WGAN-style): ℓ_D = D(θ) - D(0) = ψθ, ℓ_G = -ψθ. Its dynamics are exactly linear.

At the equilibrium both BCE losses have ∂ℓ_D/∂ψ = c·θ and ∂ℓ_G/∂θ = -c·ψ to first order with
c = σ(0) = 1/2; the linear loss has c = 1 exactly. D's regularizer (``reg=``):

* ``"r1"``: R1 = (γ/2)|∇_x D(x_real)|², computed with autograd at x_real = 0; it equals (γ/2)ψ²;
* ``"l2"``: normreg.SquaredL2(γ) on ψ — ``reg_mode="grad"`` adds its gradient γψ inside
  normreg.optim.ProxSGD's update (identical to R1 here); ``reg_mode="prox"`` takes its
  proximal step ψ ← ψ/(1 + hγ);
* ``"l1"``: normreg.L1(λ), proximal step ψ ← S_{hλ}(ψ) (soft threshold) in ProxSGD;
* ``"elastic_net"``: normreg.ElasticNet(λ₁, λ₂), proximal step.

Updates (``scheme=``): ``"simultaneous"`` (both gradients at the same point) or
``"alternating"`` (D steps first; G's gradient is taken at the new ψ). Both networks use
normreg.optim.ProxSGD with learning rate h.

The closed forms the tests check (derived in docs/stability.md):

* :func:`continuous_eigenvalues`: the Jacobian of the continuous system at (0, 0) has
  eigenvalues (−γ ± √(γ² − 4c²))/2 (c = 1/2: the paper's (−γ ± √(γ² − 1))/2);
* :func:`step_matrix`: the linear map of one discrete step (exact for ``"linear"``, the
  linearization at (0, 0) for the BCE losses);
* :func:`l1_band`: with the L1 prox on ψ every (θ, 0) with |θ| ≤ λ/c is a fixed point
  (|θ| ≤ 2λ for the BCE losses), for any step size and either scheme.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normreg

__all__ = [
    "DiracGAN",
    "LOSSES",
    "REGS",
    "SCHEMES",
    "loss_slope",
    "continuous_eigenvalues",
    "step_matrix",
    "spectral_radius",
    "l1_band",
]

LOSSES = ("bce", "nonsaturating", "linear")
REGS = ("none", "r1", "l2", "l1", "elastic_net")
SCHEMES = ("simultaneous", "alternating")


def loss_slope(loss: str) -> float:
    """c = |f'(0)|: ∂ℓ_D/∂ψ = c·θ and ∂ℓ_G/∂θ = −c·ψ near the equilibrium."""
    if loss not in LOSSES:
        raise ValueError(f"'loss' must be one of {', '.join(LOSSES)}, got {loss!r}")
    return 1.0 if loss == "linear" else 0.5


def _strength(v, arg: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"'{arg}' must be a real number, got {type(v).__name__}")
    v = float(v)
    if not (v >= 0) or not math.isfinite(v):
        raise ValueError(f"'{arg}' is a regularization strength and must be finite and >= 0, got {v}")
    return v


class DiracGAN:
    """One Dirac-GAN: parameters ``theta`` (G) and ``psi`` (D's weight), optimizers, a ``step()``.

    Parameters
    ----------
    theta, psi : float
        Starting point.
    lr : float > 0
        Step size h of both networks.
    loss : "bce" | "nonsaturating" | "linear"
    reg : "none" | "r1" | "l2" | "l1" | "elastic_net"
    gamma : float >= 0
        Strength of ``r1`` / ``l2`` (γ), or of the L1 part of ``l1`` / ``elastic_net`` (λ).
    gamma2 : float >= 0
        ``elastic_net``: the squared-L2 part.
    reg_mode : "grad" | "prox"
        For ``l2``: its gradient inside ProxSGD or its proximal step (``l1`` and
        ``elastic_net`` are always proximal; ``r1`` is always a loss term).
    scheme : "simultaneous" | "alternating"
    dtype : torch dtype (default float64)
    """

    def __init__(
        self,
        theta: float = 1.0,
        psi: float = 1.0,
        *,
        lr: float = 0.1,
        loss: str = "bce",
        reg: str = "none",
        gamma: float = 0.0,
        gamma2: float = 0.0,
        reg_mode: str = "grad",
        scheme: str = "simultaneous",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        loss_slope(loss)
        if reg not in REGS:
            raise ValueError(f"'reg' must be one of {', '.join(REGS)}, got {reg!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"'scheme' must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if reg_mode not in ("grad", "prox"):
            raise ValueError(f"'reg_mode' must be 'grad' or 'prox', got {reg_mode!r}")
        if reg in ("l1", "elastic_net") and reg_mode == "grad":
            reg_mode = "prox"  # the L1 term is used through its proximal step only
        lr = float(lr)
        if not (lr > 0) or not math.isfinite(lr):
            raise ValueError(f"'lr' must be finite and > 0, got {lr}")
        self.gamma, self.gamma2 = _strength(gamma, "gamma"), _strength(gamma2, "gamma2")
        self.loss, self.reg, self.reg_mode, self.scheme, self.lr = loss, reg, reg_mode, scheme, lr
        self.G = nn.Module()
        self.G.theta = nn.Parameter(torch.tensor([float(theta)], dtype=dtype))
        self.D = nn.Linear(1, 1, bias=False).to(dtype)
        with torch.no_grad():
            self.D.weight.fill_(float(psi))
        penalty = None
        if reg == "l2":
            penalty = normreg.SquaredL2(self.gamma)
        elif reg == "l1":
            penalty = normreg.L1(self.gamma)
        elif reg == "elastic_net":
            penalty = normreg.ElasticNet(self.gamma, self.gamma2)
        self.opt_g = normreg.optim.ProxSGD([self.G.theta], lr=lr)
        self.opt_d = normreg.optim.ProxSGD(
            self.D.parameters(),
            lr=lr,
            penalty=penalty,
            penalty_mode=reg_mode if penalty is not None else "prox",
        )
        self.real = torch.zeros(1, 1, dtype=dtype)

    # -- state ----------------------------------------------------------------------------
    @property
    def theta(self) -> float:
        return float(self.G.theta.detach())

    @property
    def psi(self) -> float:
        return float(self.D.weight.detach())

    @property
    def point(self) -> np.ndarray:
        return np.array([self.theta, self.psi])

    # -- losses ----------------------------------------------------------------------------
    def _fake(self) -> Tensor:
        return self.G.theta.view(1, 1)

    def d_loss(self) -> Tensor:
        """D's loss at the current point, R1 included (``reg="r1"``)."""
        real = self.real.clone().requires_grad_(self.reg == "r1")
        d_real, d_fake = self.D(real), self.D(self._fake().detach())
        if self.loss == "linear":
            out = (d_fake - d_real).sum()
        else:
            out = (F.softplus(-d_real) + F.softplus(d_fake)).sum()
        if self.reg == "r1":
            (g,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            out = out + 0.5 * self.gamma * g.pow(2).sum()
        return out

    def g_loss(self) -> Tensor:
        d_fake = self.D(self._fake())
        if self.loss == "linear":
            return -d_fake.sum()
        if self.loss == "bce":
            return -F.softplus(d_fake).sum()
        return F.softplus(-d_fake).sum()

    def _d_grad(self) -> None:
        self.opt_d.zero_grad(set_to_none=True)
        self.D.requires_grad_(True)
        (g,) = torch.autograd.grad(self.d_loss(), self.D.weight)
        self.D.weight.grad = g

    def _g_grad(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        (g,) = torch.autograd.grad(self.g_loss(), self.G.theta)
        self.G.theta.grad = g

    def step(self) -> np.ndarray:
        """One update of both networks per ``scheme``; returns the new (θ, ψ)."""
        if self.scheme == "simultaneous":
            self._d_grad()
            self._g_grad()  # at the same (θ, ψ): both gradients before either step
            self.opt_d.step()
            self.opt_g.step()
        else:
            self._d_grad()
            self.opt_d.step()
            self._g_grad()  # at the new ψ
            self.opt_g.step()
        return self.point

    def run(self, steps: int) -> np.ndarray:
        """``steps`` updates; returns the trajectory as a (steps + 1, 2) array (start included)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"'steps' must be an int >= 0, got {steps!r}")
        out = np.empty((steps + 1, 2))
        out[0] = self.point
        for k in range(steps):
            out[k + 1] = self.step()
        return out

    def vector_field(self) -> np.ndarray:
        """The continuous-time field (θ̇, ψ̇) = (−∂ℓ_G/∂θ, −∂ℓ_D/∂ψ − [γψ for l2]) at the current point.

        With ``reg="l2"`` the SquaredL2 gradient γψ is included (its gradient form); the
        L1 terms have no field (they are only used through their proximal step).
        """
        self._d_grad()
        self._g_grad()
        gd = float(self.D.weight.grad)
        if self.reg == "l2":
            gd += self.gamma * self.psi
        return np.array([-float(self.G.theta.grad), -gd])


# ---- closed forms ----------------------------------------------------------------------------
def continuous_eigenvalues(gamma: float, c: float = 0.5) -> tuple[complex, complex]:
    """Eigenvalues (−γ ± √(γ² − 4c²))/2 of the Jacobian of (θ̇, ψ̇) at (0, 0) with R1 / L2 strength γ."""
    gamma = _strength(gamma, "gamma")
    root = cmath.sqrt(gamma * gamma - 4 * c * c)
    return ((-gamma + root) / 2, (-gamma - root) / 2)


def step_matrix(scheme: str, h: float, c: float, gamma: float = 0.0, reg_mode: str = "grad") -> np.ndarray:
    """The 2x2 map (θ, ψ) ↦ (θ', ψ') of one step with R1 / L2 strength γ (docs/stability.md).

    ``reg_mode="grad"``: ψ' = ψ − h(cθ + γψ) (R1, or SquaredL2's gradient);
    ``"prox"``: ψ' = (ψ − hcθ)/(1 + hγ) (SquaredL2's proximal step). G: θ' = θ + hcψ̃, with
    ψ̃ = ψ (simultaneous) or ψ' (alternating).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"'scheme' must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    gamma = _strength(gamma, "gamma")
    if reg_mode == "grad":
        dpsi = np.array([-h * c, 1.0 - h * gamma])  # ψ' as a row acting on (θ, ψ)
    elif reg_mode == "prox":
        dpsi = np.array([-h * c, 1.0]) / (1.0 + h * gamma)
    else:
        raise ValueError(f"'reg_mode' must be 'grad' or 'prox', got {reg_mode!r}")
    if scheme == "simultaneous":
        dtheta = np.array([1.0, h * c])
    else:
        dtheta = np.array([1.0, 0.0]) + h * c * dpsi
    return np.stack([dtheta, dpsi])


def spectral_radius(m: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(m))))


def l1_band(lam: float, c: float = 0.5) -> float:
    """Half-width λ/c of the band of fixed points (θ, 0), |θ| ≤ λ/c, of the L1 prox on ψ (2λ for BCE)."""
    return _strength(lam, "lam") / c
