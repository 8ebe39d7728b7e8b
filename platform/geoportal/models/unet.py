"""U-Net for segmentation: a class per pixel, any band count, any tile size.

The encoder halves the resolution ``depth`` times, so the spatial size must be
a multiple of ``2 ** depth``. Rather than burden every caller with that, the
forward pass pads the input (replicating edges) to the next multiple and crops
the logits back, so a 100×100 tile gives 100×100 logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from geoportal.errors import InvalidInputError
from geoportal.models import register


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad ``x`` at the bottom/right to a multiple of ``multiple``; return it and the size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nnf.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w


class DoubleConv(nn.Sequential):
    """Two same-padded 3×3 convolutions with batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Classic encoder/decoder with skip connections (Ronneberger et al. 2015), compact.

    Args:
        in_channels: bands of the input.
        num_classes: classes predicted per pixel.
        base_channels: channels of the first level; each level doubles them.
        depth: number of down-samplings (the input is padded to a multiple of ``2**depth``).
        dropout: dropout at the bottleneck.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 16,
        depth: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise InvalidInputError("depth must be at least 1", field="model.args.depth")
        self.depth = depth
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, chans[0])
        self.down = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for an input ``(B, C, H, W)`` of any H, W."""
        x, h, w = pad_to_multiple(x, 2**self.depth)
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(nnf.max_pool2d(skips[-1], 2)))
        y = self.dropout(skips.pop())
        for up, dec in zip(self.up, self.dec, strict=True):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)[..., :h, :w]


@register("unet", kind="segmentation")
def unet(in_channels: int, num_classes: int, **kwargs: object) -> UNet:
    """Factory registered as ``unet``."""
    return UNet(in_channels, num_classes, **kwargs)  # type: ignore[arg-type]
