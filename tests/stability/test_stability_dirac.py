"""Dirac-GAN golden tests: normreg's penalties, prox steps and ProxSGD against closed forms.

The closed forms (derived in docs/stability.md) are computed here in float64 numpy,
independently of the torch stack that runs the GAN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from normreg.stability.dirac import (
    DiracGAN,
    continuous_eigenvalues,
    l1_band,
    loss_slope,
    spectral_radius,
    step_matrix,
)

H = 0.1


def _matrix_path(m: np.ndarray, x0, steps: int) -> np.ndarray:
    out = [np.asarray(x0, dtype=np.float64)]
    for _ in range(steps):
        out.append(m @ out[-1])
    return np.array(out)


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
@pytest.mark.parametrize(
    "reg,gamma,mode", [("none", 0.0, "grad"), ("r1", 0.7, "grad"), ("l2", 0.7, "grad"), ("l2", 0.7, "prox")]
)
def test_linear_loss_follows_step_matrix(scheme, reg, gamma, mode):
    # The linear loss makes the dynamics exactly linear: the whole stack (autograd R1,
    # SquaredL2 gradient or prox inside ProxSGD) must reproduce the matrix powers.
    g = DiracGAN(0.3, -0.2, lr=H, loss="linear", reg=reg, gamma=gamma, reg_mode=mode, scheme=scheme)
    path = g.run(30)
    ref = _matrix_path(step_matrix(scheme, H, 1.0, gamma, mode), [0.3, -0.2], 30)
    np.testing.assert_allclose(path, ref, rtol=0, atol=1e-13)


def test_simultaneous_gd_spirals_out():
    # |x_k|^2 = (1 + h^2 c^2)^k |x_0|^2 exactly for the linear loss (A^T A = (1 + h^2c^2) I)
    g = DiracGAN(0.3, -0.2, lr=H, loss="linear")
    r = np.linalg.norm(g.run(100), axis=1)
    np.testing.assert_allclose(r, r[0] * (1 + H * H) ** (np.arange(101) / 2), rtol=1e-12)
    # the BCE GAN spirals out too: the norm grows step after step, to more than twice its start
    g = DiracGAN(0.5, 0.0, lr=0.5, loss="bce")
    r = np.linalg.norm(g.run(150), axis=1)
    assert r[-1] > 2 * r[0]
    assert np.all(np.diff(r[::10]) > 0)


def test_alternating_gd_orbits():
    # Alternating GD conserves Q = θ² + ψ² − hcθψ (linear loss): it orbits, neither in nor out.
    g = DiracGAN(0.3, -0.2, lr=H, loss="linear", scheme="alternating")
    p = g.run(200)
    q = p[:, 0] ** 2 + p[:, 1] ** 2 - H * p[:, 0] * p[:, 1]
    np.testing.assert_allclose(q, q[0], rtol=1e-11)
    assert spectral_radius(step_matrix("alternating", H, 1.0)) == pytest.approx(1.0, abs=1e-12)
    # BCE: bounded and not converging (a rotation takes about 2π/(hc) = 126 steps)
    g = DiracGAN(1.0, 0.0, lr=H, loss="bce", scheme="alternating")
    r = np.linalg.norm(g.run(300), axis=1)
    assert r.max() < 1.1 and r[-130:].min() > 0.9


@pytest.mark.parametrize("loss", ["bce", "nonsaturating", "linear"])
@pytest.mark.parametrize("gamma", [0.0, 0.4, 1.0, 3.0])
@pytest.mark.parametrize("reg", ["r1", "l2"])
def test_continuous_eigenvalues(loss, gamma, reg):
    # Jacobian of the field (θ̇, ψ̇) at (0, 0) by central differences of the stack's gradients
    eps = 1e-6
    jac = np.empty((2, 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = eps
        fp = DiracGAN(*e, loss=loss, reg=reg, gamma=gamma).vector_field()
        fm = DiracGAN(*(-e), loss=loss, reg=reg, gamma=gamma).vector_field()
        jac[:, j] = (fp - fm) / (2 * eps)
    got = sorted(np.linalg.eigvals(jac), key=lambda z: (z.real, z.imag))
    c = loss_slope(loss)
    want = sorted(continuous_eigenvalues(gamma, c), key=lambda z: (z.real, z.imag))
    # the closed form, from the characteristic polynomial μ² + γμ + c² = 0
    for z in want:
        assert abs(z * z + gamma * z + c * c) < 1e-12
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-6)


def test_r1_converges_at_the_discrete_rate():
    # BCE with R1 converges to (0, 0); near it the stack follows the linearized step matrix
    # (c = 1/2) up to the cubic term of the loss: |error| ~ |x|³, 1e-9 here from |x| = 2e-3.
    # (γ = 0.6, not γ = 2c = 1 where the eigenvalue is double and the decay is k·ρ^k)
    for scheme in ("simultaneous", "alternating"):
        m = step_matrix(scheme, 0.5, 0.5, 0.6)
        assert spectral_radius(m) < 1
        g = DiracGAN(0.2, 0.1, lr=0.5, loss="bce", reg="r1", gamma=0.6, scheme=scheme)
        r = np.linalg.norm(g.run(120), axis=1)
        assert r[-1] < r[0] * 1e-6
        for loss in ("bce", "nonsaturating"):
            g = DiracGAN(2e-3, -1e-3, lr=0.5, loss=loss, reg="r1", gamma=0.6, scheme=scheme)
            np.testing.assert_allclose(g.run(40), _matrix_path(m, [2e-3, -1e-3], 40), rtol=0, atol=1e-8)


def test_simultaneous_needs_gamma_above_h_c2():
    # complex eigenvalues: |1 + hμ|² = 1 − hγ + h²c², so simultaneous GD converges iff γ > hc².
    h, c = 0.5, 1.0
    for gamma, converges in ((0.3, False), (0.45, False), (0.55, True), (1.0, True)):
        rho = spectral_radius(step_matrix("simultaneous", h, c, gamma))
        assert rho == pytest.approx(math.sqrt(1 - h * gamma + h * h * c * c), rel=1e-12)
        g = DiracGAN(0.3, 0.2, lr=h, loss="linear", reg="l2", gamma=gamma)
        r = np.linalg.norm(g.run(60), axis=1)
        assert bool(r[-1] < r[0]) == converges
    # real eigenvalues (γ ≥ 2c): ρ = |1 + hμ₋| with μ₋ = (−γ − √(γ² − 4c²))/2, so convergence
    # needs h(γ + √(γ² − 4c²)) < 4 as well: too strong a penalty diverges again (γ = 5, h = 0.5)
    for gamma, converges in ((4.0, True), (5.0, False)):
        mu = (-gamma - math.sqrt(gamma * gamma - 4 * c * c)) / 2
        rho = spectral_radius(step_matrix("simultaneous", h, c, gamma))
        assert rho == pytest.approx(abs(1 + h * mu), rel=1e-12)
        g = DiracGAN(0.3, 0.2, lr=h, loss="linear", reg="r1", gamma=gamma)
        r = np.linalg.norm(g.run(60), axis=1)
        assert bool(r[-1] < r[0]) == converges


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
@pytest.mark.parametrize("loss", ["bce", "nonsaturating", "linear"])
def test_l1_prox_band_of_fixed_points(scheme, loss):
    lam = 0.1
    band = l1_band(lam, loss_slope(loss))
    assert band == pytest.approx(2 * lam if loss != "linear" else lam)
    for theta in (0.999 * band, -0.5 * band, 0.0):
        g = DiracGAN(theta, 0.0, lr=H, loss=loss, reg="l1", gamma=lam, scheme=scheme)
        p = g.run(10)
        assert np.all(p[:, 1] == 0.0) and np.all(p[:, 0] == theta)  # exact fixed points
    g = DiracGAN(1.001 * band, 0.0, lr=H, loss=loss, reg="l1", gamma=lam, scheme=scheme)
    assert g.step()[1] != 0.0  # just outside the band D moves


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_l1_prox_stalls_inside_the_band(scheme):
    # from outside the band the BCE GAN falls into it and stops there, away from the data (θ = 0)
    lam = 0.1
    for reg, g2 in (("l1", 0.0), ("elastic_net", 0.3)):
        g = DiracGAN(1.0, 0.0, lr=0.5, loss="bce", reg=reg, gamma=lam, gamma2=g2, scheme=scheme)
        p = g.run(150)
        tail = p[-40:]
        assert np.all(tail[:, 1] == 0.0)
        assert np.all(tail[:, 0] == tail[-1, 0])
        assert 0.01 < abs(tail[-1, 0]) <= 2 * lam


def test_bad_input():
    with pytest.raises(ValueError, match="'reg'"):
        DiracGAN(reg="l3")
    with pytest.raises(ValueError, match="'gamma'"):
        DiracGAN(reg="r1", gamma=-1.0)
    with pytest.raises(ValueError, match="'scheme'"):
        DiracGAN(scheme="jacobi")
    with pytest.raises(ValueError, match="'loss'"):
        DiracGAN(loss="hinge")
    with pytest.raises(ValueError, match="'lr'"):
        DiracGAN(lr=0.0)
    with pytest.raises(ValueError, match="'gamma'"):
        continuous_eigenvalues(-0.5)
