"""Patch classifier: one class per ``patch_size`` × ``patch_size`` patch.

The network is built from *valid* 3×3 convolutions without stride or pooling,
then an average over the whole remaining extent, then a 1×1 classifier. Because
nothing in it depends on the absolute position, the same weights slide over a
scene exactly: :meth:`PatchCNN.dense_forward` replaces the global average by a
stride-1 average pool whose window is the remaining extent, which gives for
every pixel the very logits ``forward`` gives for the patch centred there. So
inference classifies every pixel with one convolutional pass instead of
cutting millions of overlapping patches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

from geoportal.errors import InvalidInputError
from geoportal.models import register


def _conv_block(
    in_channels: int, out_channels: int, kernel: int, batch_norm: bool
) -> list[nn.Module]:
    # BatchNorm in eval mode is a per-channel affine map, so it keeps dense_forward exact.
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, padding=0, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class PatchCNN(nn.Module):
    """Valid-convolution patch classifier with an exact dense (sliding) form.

    Args:
        in_channels: bands of the input (any count: 3, 6, 13, 68...).
        num_classes: classes predicted.
        patch_size: side of the square patches it classifies (any size from 1).
        width: channels of the first convolution; later ones grow to ``2 * width``.
        depth: number of convolutions. As many as fit are valid 3×3 convolutions
            (each trims one pixel per side, so at most ``(patch_size - 1) // 2``);
            the rest are 1×1, so small patches (5 px of Landsat) still work.
        dropout: dropout before the classifier (identity at evaluation).
        batch_norm: batch normalisation after each convolution.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        patch_size: int = 9,
        width: int = 32,
        depth: int = 3,
        dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise InvalidInputError("depth must be at least 1", field="model.args.depth")
        if patch_size < 1:
            raise InvalidInputError("patch_size must be at least 1", field="model.args.patch_size")
        n3 = min(depth, (patch_size - 1) // 2)
        self.patch_size = patch_size
        self.remaining = patch_size - 2 * n3
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            out = width if i == 0 else 2 * width
            layers += _conv_block(channels, out, 3 if i < n3 else 1, batch_norm)
            channels = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` for patches ``(B, C, p, p)``."""
        if x.shape[-1] != self.patch_size or x.shape[-2] != self.patch_size:
            raise InvalidInputError(
                f"patches are {tuple(x.shape[-2:])} but the model expects "
                f"{self.patch_size}x{self.patch_size}",
                field="patch_size",
            )
        f = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(self.dropout(f)).flatten(1)

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for an input ``(B, C, H + p - 1, W + p - 1)``.

        Output pixel ``(i, j)`` equals ``forward`` of the patch whose top-left corner
        is ``(i, j)``, i.e. the patch centred at input pixel ``(i + p // 2, j + p // 2)``.
        """
        f = self.features(x)
        f = nnf.avg_pool2d(f, kernel_size=self.remaining, stride=1)
        return self.classifier(self.dropout(f))


@register("patch_cnn", kind="patch")
def patch_cnn(in_channels: int, num_classes: int, **kwargs: object) -> PatchCNN:
    """Factory registered as ``patch_cnn``."""
    return PatchCNN(in_channels, num_classes, **kwargs)  # type: ignore[arg-type]
