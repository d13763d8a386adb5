"""GAN training stability testbeds and D's regularizers (issue 18; docs/stability.md).

* :mod:`.dirac` — the Dirac-GAN (Mescheder et al. 2018) run through normreg's penalties,
  prox steps and ProxSGD, with its closed forms (:func:`continuous_eigenvalues`,
  :func:`step_matrix`, :func:`l1_band`).
* :mod:`.ring` — the ring of 8 Gaussians (Metz et al. 2017): :class:`RingConfig`,
  :class:`RingTrainer`, :func:`train_ring`, :func:`ring_metrics`.
* :mod:`.adaptive` — :class:`AdaptiveLambda`, D's penalty strength from the ADA signal
  E[sign(D(x_real))].
* :mod:`.study` — ``normreg study stability``.
"""

from __future__ import annotations

from .adaptive import AdaptiveLambda, ada_signal
from .dirac import DiracGAN, continuous_eigenvalues, l1_band, spectral_radius, step_matrix
from .ring import RingConfig, RingTrainer, ring_metrics, ring_modes, sample_ring, train_ring

__all__ = [
    "AdaptiveLambda",
    "ada_signal",
    "DiracGAN",
    "continuous_eigenvalues",
    "step_matrix",
    "spectral_radius",
    "l1_band",
    "RingConfig",
    "RingTrainer",
    "train_ring",
    "ring_metrics",
    "ring_modes",
    "sample_ring",
]
