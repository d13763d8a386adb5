"""Image-space losses: fused L1 / squared-L2 reconstruction, total variation, SSIM.

The sources add a norm term on the generated image itself to the generator's loss,
``lambda * sum |G(x) - y|`` (L1, sharper) or ``lambda * sum ||G(x) - y||^2`` (L2):

>>> loss_g = adv_loss + lam * normreg.losses.l1_loss(fake, real, reduction="sum")  # the sources' sum form
>>> loss_g = adv_loss + 100 * normreg.losses.l1_loss(fake, real)  # pix2pix: lambda = 100 with "mean"

The sum form is ``reduction="sum"``; the usual pix2pix ``lambda = 100`` refers to
``reduction="mean"`` (the default, as in ``torch.nn.functional.l1_loss``). The two differ by
a factor of ``pred.numel()``: ``lambda`` with "sum" equals ``lambda * numel`` with "mean".

CPU tensors go through the fused C++ kernels: when ``pred`` (or ``target``) requires grad,
the one forward pass over pred and target also writes the derivative of each element, and
the backward only scales it by the incoming gradient; nothing else is materialized.
Tensors on other devices, and masks or weights that require grad, go through the pure-torch
reference (:mod:`normreg._reference`) with the same semantics.

Options after the inputs are keyword-only (``l1_loss(p, t, reduction="sum")``). Mixed input
dtypes are promoted as torch promotes them, and under ``torch.autocast`` ``l1_loss`` and
``mse_loss`` follow torch's policy for ``F.l1_loss`` / ``F.mse_loss`` (float32 list):
computed and returned in float32 (float64 stays float64).
"""

from .pointwise import l1_loss, mse_loss
from .ssim import ssim_loss
from .tv import total_variation

__all__ = ["l1_loss", "mse_loss", "total_variation", "ssim_loss"]
