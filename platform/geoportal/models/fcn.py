"""Compact DeepLab-style segmentation net (registered as ``fcn``).

A short strided encoder (output stride 4) followed by an atrous spatial pyramid
(parallel 3×3 convolutions with dilations 1, 2, 4 and an image-level pooling
branch) gives a wide receptive field with few weights, then the logits are
upsampled bilinearly to the input size. Far lighter than the U-Net, which suits
CPU training and quick experiments; inputs of any size work because the input is
padded to a multiple of 4 and the logits are cropped back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from geoportal.models import register
from geoportal.models.unet import pad_to_multiple


def _cbr(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: context at several dilations, fused by a 1×1 conv."""

    def __init__(self, channels: int, out_channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_cbr(channels, out_channels, dilation=d) for d in dilations)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(dilations) + 1), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DilatedFCN(nn.Module):
    """Small DeepLab-v3-like net: strided encoder, ASPP, bilinear upsampling.

    Args:
        in_channels: bands of the input.
        num_classes: classes predicted per pixel.
        width: channels of the first stage (the second and the pyramid use ``2 * width``).
        dilations: dilation rates of the pyramid's branches.
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(in_channels, width), _cbr(width, width))
        self.encoder = nn.Sequential(
            _cbr(width, 2 * width, stride=2), _cbr(2 * width, 2 * width, stride=2)
        )
        self.aspp = ASPP(2 * width, 2 * width, tuple(dilations))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(2 * width + width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for an input ``(B, C, H, W)`` of any H, W."""
        x, h, w = pad_to_multiple(x, 4)
        low = self.stem(x)
        y = self.aspp(self.encoder(low))
        y = nnf.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        # The full-resolution stem features sharpen class boundaries (DeepLab-v3+ decoder idea).
        y = self.head(self.dropout(torch.cat([y, low], dim=1)))
        return y[..., :h, :w]


@register("fcn", kind="segmentation")
def fcn(in_channels: int, num_classes: int, **kwargs: object) -> DilatedFCN:
    """Factory registered as ``fcn``."""
    return DilatedFCN(in_channels, num_classes, **kwargs)  # type: ignore[arg-type]
