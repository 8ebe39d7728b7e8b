"""Architectures: shapes for any band count, exact dense application of patch models."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from geoportal.errors import InvalidInputError  # noqa: E402
from geoportal.models import KINDS, build_model  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny models; on a loaded 2-core machine two OpenMP threads wait on each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_names_and_kinds():
    assert KINDS["patch_cnn"] == "patch"
    assert KINDS["unet"] == "segmentation"
    assert KINDS["fcn"] == "segmentation"


def test_unknown_architecture_names_field():
    with pytest.raises(InvalidInputError) as info:
        build_model("resnet9000", 3, 2)
    assert info.value.field == "model.architecture"
    assert "patch_cnn" in str(info.value)


def test_wrong_argument_names_field():
    with pytest.raises(InvalidInputError) as info:
        build_model("unet", 3, 2, nonsense=1)
    assert info.value.field == "model.args"


@pytest.mark.parametrize("bands", [3, 6, 13, 68])
def test_patch_cnn_shapes(bands):
    model = build_model("patch_cnn", bands, 5, patch_size=9, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(4, bands, 9, 9)).shape == (4, 5)
        assert model.dense_forward(torch.randn(1, bands, 20, 17)).shape == (1, 5, 12, 9)


@pytest.mark.parametrize("name", ["unet", "fcn"])
@pytest.mark.parametrize("bands", [3, 6, 13, 68])
def test_segmentation_shapes_any_size(name, bands):
    model = build_model(
        name, bands, 4, **({"base_channels": 4} if name == "unet" else {"width": 4})
    )
    model.eval()
    with torch.no_grad():
        for h, w in [(32, 32), (37, 50), (5, 3)]:
            assert model(torch.randn(2, bands, h, w)).shape == (2, 4, h, w)


def test_small_patches_use_1x1_convolutions():
    for p in (1, 2, 5):
        model = build_model("patch_cnn", 6, 2, patch_size=p, depth=3).eval()
        kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert kernels[:3] == [3] * ((p - 1) // 2) + [1] * (3 - (p - 1) // 2)
        with torch.no_grad():
            assert model(torch.randn(2, 6, p, p)).shape == (2, 2)
    with pytest.raises(InvalidInputError) as info:
        build_model("patch_cnn", 3, 2, patch_size=9, depth=0)
    assert info.value.field == "model.args.depth"


def test_patch_cnn_rejects_wrong_patch_size():
    model = build_model("patch_cnn", 3, 2, patch_size=9).eval()
    with pytest.raises(InvalidInputError):
        model(torch.randn(1, 3, 11, 11))


@pytest.mark.parametrize("patch_size", [1, 2, 5, 7, 8, 9, 12])
def test_dense_forward_equals_patch_forward(patch_size):
    torch.manual_seed(patch_size)
    model = build_model("patch_cnn", 6, 3, patch_size=patch_size, width=8, depth=3).double()
    # Non-trivial batch-norm statistics, so the test covers them in eval mode.
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 6, patch_size, patch_size, dtype=torch.float64) * 3 + 1)
    model.eval()
    h, w = 6, 5
    scene = torch.randn(2, 6, h + patch_size - 1, w + patch_size - 1, dtype=torch.float64)
    with torch.no_grad():
        dense = model.dense_forward(scene)
        assert dense.shape == (2, 3, h, w)
        patches = torch.stack(
            [
                scene[b, :, i : i + patch_size, j : j + patch_size]
                for b in range(2)
                for i in range(h)
                for j in range(w)
            ]
        )
        per_patch = model(patches).reshape(2, h, w, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, per_patch, rtol=1e-10, atol=1e-10)
    # The patch centred at input pixel (i + p//2, j + p//2) is what pixel (i, j) means.
    c = patch_size // 2
    ci, cj = 2 + c, 3 + c
    centred = scene[:1, :, ci - c : ci - c + patch_size, cj - c : cj - c + patch_size]
    with torch.no_grad():
        torch.testing.assert_close(model(centred)[0], dense[0, :, 2, 3])


def test_dense_forward_float32_close():
    model = build_model("patch_cnn", 13, 4, patch_size=9, width=8).eval()
    scene = torch.randn(1, 13, 16, 16)
    with torch.no_grad():
        dense = model.dense_forward(scene)
        one = model(scene[:, :, 3:12, 5:14])
    torch.testing.assert_close(dense[:, :, 3, 5], one, rtol=1e-5, atol=1e-5)
