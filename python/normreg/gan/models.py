"""Generators and discriminators sized from the image size.

* ``DCGANGenerator`` / ``DCGANDiscriminator``: unconditional, 4x4 base doubled to the image size.
* ``UNetGenerator``: pix2pix's U-Net, downsampling to 1x1 (depth ``log2(S)``), skip connections;
  with ``residual=True`` (super-resolution) it predicts the correction to its input (the
  bicubic upsampling): ``clamp(input + U(input), -1, 1)``, its last layer's weights
  initialised to zero so that training starts from the bicubic answer.
* ``PatchDiscriminator``: pix2pix's PatchGAN, conditioned on G's input by concatenation
  (``conditional=True``) or seeing the image alone; ``max(1, log2(S) - 3)`` stride-2 layers,
  so an 8x8 image is judged in 4x4 patches and a 32x32 one in 8x8.

Weights are initialised N(0, 0.02) as in DCGAN / pix2pix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "DCGANGenerator",
    "DCGANDiscriminator",
    "UNetGenerator",
    "PatchDiscriminator",
    "build_models",
    "init_weights",
]


def _ch(base: int, width: float, cap: int = 512) -> int:
    return max(4, min(cap, int(round(base * width))))


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, size: int, width: float = 1.0) -> None:
        super().__init__()
        n_up = int(math.log2(size)) - 2
        ch = [_ch(32 * 2 ** (n_up - i), width) for i in range(n_up + 1)]
        self.z_dim = z_dim
        self.fc = nn.Sequential(
            nn.Linear(z_dim, ch[0] * 16), nn.Unflatten(1, (ch[0], 4, 4)), nn.BatchNorm2d(ch[0]), nn.ReLU(True)
        )
        layers: list[nn.Module] = []
        for i in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch[i + 1]),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(ch[n_up - 1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z))


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, width: float = 1.0) -> None:
        super().__init__()
        n_down = int(math.log2(size)) - 2
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(n_down):
            c = _ch(32 * 2**i, width)
            layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers += [nn.BatchNorm2d(c)]
            layers += [nn.LeakyReLU(0.2, True)]
            c_in = c
        layers += [nn.Conv2d(c_in, 1, 4, 1, 0), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(x)


class UNetGenerator(nn.Module):
    """pix2pix U-Net: encoder C64-C128-C256-C512... down to 1x1, decoder mirrored with skips."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        size: int,
        width: float = 1.0,
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and c_in < c_out:
            raise ValueError(f"UNetGenerator: residual=True needs c_in >= c_out, got {c_in} < {c_out}")
        self.residual = residual
        self.c_out = c_out
        depth = int(math.log2(size))
        chs = [_ch(32 * 2 ** min(i, 3), width) for i in range(depth)]
        self.downs = nn.ModuleList()
        prev = c_in
        for i, c in enumerate(chs):
            norm = 0 < i < depth - 1
            self.downs.append(
                nn.Sequential(
                    nn.Conv2d(prev, c, 4, 2, 1, bias=not norm), *([nn.BatchNorm2d(c)] if norm else [])
                )
            )
            prev = c
        self.ups = nn.ModuleList()
        for i in reversed(range(depth)):
            c_skip_in = chs[i] if i == depth - 1 else chs[i] * 2
            if i == 0:
                self.ups.append(nn.ConvTranspose2d(c_skip_in, c_out, 4, 2, 1))
            else:
                layers: list[nn.Module] = [
                    nn.ConvTranspose2d(c_skip_in, chs[i - 1], 4, 2, 1, bias=False),
                    nn.BatchNorm2d(chs[i - 1]),
                ]
                if dropout > 0 and i >= depth - 3:
                    layers.append(nn.Dropout(dropout))
                self.ups.append(nn.Sequential(*layers))
        self.lrelu = nn.LeakyReLU(0.2)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for i, down in enumerate(self.downs):
            h = down(self.lrelu(h) if i > 0 else h)
            skips.append(h)
        h = skips.pop()
        for j, up in enumerate(self.ups):
            if j > 0:
                h = torch.cat([h, skips.pop()], 1)
            h = up(self.relu(h))
        if self.residual:
            return (x[:, : self.c_out] + h).clamp(-1.0, 1.0)
        return torch.tanh(h)


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN: logits per patch; sees ``cat(cond, image)`` when conditional."""

    def __init__(
        self, c_image: int, c_cond: int, size: int, width: float = 1.0, conditional: bool = True
    ) -> None:
        super().__init__()
        self.conditional = conditional
        n_down = max(1, int(math.log2(size)) - 3)
        c_in = c_image + (c_cond if conditional else 0)
        layers: list[nn.Module] = []
        for i in range(n_down):
            c = _ch(32 * 2**i, width)
            layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers += [nn.BatchNorm2d(c)]
            layers += [nn.LeakyReLU(0.2, True)]
            c_in = c
        c = _ch(32 * 2**n_down, width)
        layers += [
            nn.Conv2d(c_in, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 1, 3, 1, 1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.conditional:
            x = torch.cat([cond, x], 1)
        return self.net(x)


def build_models(cfg, channels: int, size: int, c_cond: int) -> tuple[nn.Module, nn.Module | None]:
    """G and D (``None`` when ``adv_weight == 0``) for ``cfg``, initialised from torch's RNG."""
    if cfg.task == "unconditional":
        g = DCGANGenerator(cfg.z_dim, channels, size, cfg.width)
        d = DCGANDiscriminator(channels, size, cfg.width) if cfg.uses_d else None
    else:
        g = UNetGenerator(c_cond, channels, size, cfg.width, cfg.dropout, residual=cfg.task == "superres")
        d = PatchDiscriminator(channels, c_cond, size, cfg.width, cfg.conditional_d) if cfg.uses_d else None
    g.apply(init_weights)
    if getattr(g, "residual", False):  # start from the trivial answer: a zero correction
        nn.init.zeros_(g.ups[-1].weight)
    if d is not None:
        d.apply(init_weights)
        if getattr(cfg, "d_spectral_norm", False):
            for m in list(d.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    spectral_norm(m)  # in place: m.weight becomes W / sigma_max(W)
    return g, d
