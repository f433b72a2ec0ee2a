import pytest
import torch
from _helpers import randomize_bn

from csgis.config import ModelConfig
from csgis.models import HDCBlock, Smoother, SmootherOutput, build_smoother, count_parameters
from csgis.models.smoother import architecture_flops


@pytest.mark.parametrize("descriptor_blocks, expected", [(12, 2_528_519), (20, 3_417_863)])
def test_parameter_count_matches_paper(descriptor_blocks, expected):
    model = Smoother(width=64, descriptor_blocks=descriptor_blocks)
    assert count_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected


def test_hdc_block_layers():
    block = HDCBlock(4)
    assert [c.dilation for c in (block.conv1, block.conv2, block.conv3)] == [(1, 1), (2, 2), (3, 3)]
    assert [c.padding for c in (block.conv1, block.conv2, block.conv3)] == [(1, 1), (2, 2), (3, 3)]
    # A block whose convolutions output zero is the identity (the residual connection).
    for conv in (block.conv3,):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    block.bn3.bias.data.fill_(-1.0)  # ReLU then gives exactly zero
    block.eval()
    x = torch.randn(1, 4, 6, 5)
    assert torch.equal(block(x), x)


def test_output_shapes_and_prediction_is_sum():
    torch.manual_seed(0)
    model = Smoother(width=6, descriptor_blocks=2, coarse_blocks=1, refine_blocks=2)
    out = model(torch.rand(2, 3, 17, 23))  # train mode, odd sizes
    assert isinstance(out, SmootherOutput)
    assert out.edge_logits.shape == (2, 1, 17, 23)
    assert out.coarse.shape == out.residual.shape == out.prediction.shape == (2, 3, 17, 23)
    assert torch.equal(out.prediction, out.coarse + out.residual)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 9, 8))
    assert torch.equal(out.prediction, out.coarse + out.residual)
    assert out.prediction.dtype == torch.float32


def test_arch_and_build_smoother():
    model = build_smoother(ModelConfig(width=5, descriptor_blocks=1, coarse_blocks=2, refine_blocks=0))
    assert model.arch == {"width": 5, "descriptor_blocks": 1, "coarse_blocks": 2, "refine_blocks": 0}
    assert len(model.blocks) == 1 and len(model.coarse_head.blocks) == 2 and len(model.refine_head.blocks) == 0
    assert build_smoother(ModelConfig()).arch == {"width": 64, "descriptor_blocks": 12,
                                                  "coarse_blocks": 3, "refine_blocks": 6}
    assert build_smoother({"width": 5, "input_skip": True}).arch["input_skip"] is True
    assert model.stem.in_channels == 3
    assert model.coarse_head.conv_in.in_channels == 5 + 1      # features + edge
    assert model.refine_head.conv_in.in_channels == 5 + 1 + 3  # features + edge + coarse
    with pytest.raises(ValueError, match="width"):
        Smoother(width=0)
    with pytest.raises(ValueError, match="input_skip"):
        Smoother(width=4, input_skip=1)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        model(torch.rand(1, 1, 8, 8))


def test_input_skip_adds_the_input_to_the_coarse_head_only():
    """model.input_skip: the same weights give coarse + x; the refine head then sees that coarse."""
    torch.manual_seed(0)
    plain = Smoother(width=6, descriptor_blocks=2, coarse_blocks=1, refine_blocks=1)
    randomize_bn(plain)
    skip = Smoother(width=6, descriptor_blocks=2, coarse_blocks=1, refine_blocks=1, input_skip=True)
    skip.load_state_dict(plain.state_dict())
    assert count_parameters(skip) == count_parameters(plain)
    assert Smoother(2, input_skip=True).receptive_radius() == Smoother(2).receptive_radius()
    with_skip, without = architecture_flops(6, 2, 1, 1, input_skip=True), architecture_flops(6, 2, 1, 1)
    assert with_skip["conv"] == without["conv"] and with_skip["elementwise"] == without["elementwise"] + 3
    plain.eval()
    skip.eval()
    x = torch.rand(2, 3, 13, 11)
    with torch.no_grad():
        a, b = plain(x), skip(x)
        torch.testing.assert_close(b.coarse, a.coarse + x)
        assert torch.equal(b.edge_logits, a.edge_logits)
        assert not torch.allclose(b.residual, a.residual)  # the refine head reads the new coarse
        assert torch.equal(b.prediction, b.coarse + b.residual)
        # Heads that output zero pass the input through unchanged (what the skip is for).
        for conv in (skip.coarse_head.conv_out, skip.refine_head.conv_out):
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
        assert torch.equal(skip(x).prediction, x)
        skip.channel_order = "bgr"  # also with the authors' channel order (flipped in and back out)
        assert torch.equal(skip(x).prediction, x)


def test_receptive_radius_formula():
    # 1 (stem) + 6 per HDC block + 3 (edge head) + 1 + 6C + 2 (coarse head) + 1 + 6R + 1 (refine head)
    assert Smoother(width=2).receptive_radius() == 135
    assert Smoother(width=2, descriptor_blocks=20).receptive_radius() == 183
    assert Smoother(width=2, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1).receptive_radius() == 27


def _positive_model(heavy_tap: tuple[int, int], **arch) -> Smoother:
    """Positive weights and biases (every ReLU passes, no path cancels); half of each kernel's mass
    on one tap, so the longest path (~70 convolutions) stays far above float32 underflow."""
    model = Smoother(**arch).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(0.5 / (8 * m.in_channels))
                m.weight[:, :, heavy_tap[0], heavy_tap[1]] = 0.5 / m.in_channels
                m.bias.fill_(0.01)
    return model.requires_grad_(False)  # only the input gradient is wanted


def _input_influence(model: Smoother, size: int, output_pixel: tuple[int, int]) -> torch.Tensor:
    """(size,size) map of |d prediction[output_pixel] / d input|: the input pixels that can move it."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    model(x).prediction[0, :, output_pixel[0], output_pixel[1]].sum().backward()
    return x.grad.abs().sum(dim=(0, 1))


@pytest.mark.parametrize("arch", [dict(width=2, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1),
                                  dict(width=2)])  # the default block counts 12/3/6
def test_receptive_radius_is_exact(arch):
    radius = Smoother(**arch).receptive_radius()
    size = radius + 6
    # Output at the top-left corner reads right/down (kernel tap [2, 2]); bottom-right reads left/up.
    for output_pixel, heavy_tap in (((0, 0), (2, 2)), ((size - 1, size - 1), (0, 0))):
        influence = _input_influence(_positive_model(heavy_tap, **arch), size, output_pixel)
        rows = influence.sum(dim=1).nonzero().flatten()
        cols = influence.sum(dim=0).nonzero().flatten()
        # Nonzero out to exactly the radius in both axes (the far corner included), zero beyond.
        assert (rows - output_pixel[0]).abs().max().item() == radius
        assert (cols - output_pixel[1]).abs().max().item() == radius
        far = [p + radius if p == 0 else p - radius for p in output_pixel]
        assert influence[far[0], far[1]] > 0


def _extent(mask: torch.Tensor, pixel: tuple[int, int]) -> tuple[int, int, int, int]:
    """Reach of a boolean map around pixel: (up, down, left, right)."""
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    return (pixel[0] - rows.min().item(), rows.max().item() - pixel[0],
            pixel[1] - cols.min().item(), cols.max().item() - pixel[1])


def test_random_weights_stay_inside_radius():
    # Default init, float32, eval BN with non-trivial statistics; a finite perturbation of one pixel.
    torch.manual_seed(0)
    model = Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1).eval()
    randomize_bn(model)
    radius = model.receptive_radius()
    x = torch.rand(1, 3, 64, 64)
    pixel = (30, 33)
    perturbed = x.clone()
    perturbed[0, :, pixel[0], pixel[1]] += 0.5
    with torch.no_grad():
        changed = (model(perturbed).prediction - model(x).prediction).abs().sum(dim=(0, 1)) > 0
    up, down, left, right = _extent(changed, pixel)
    assert max(up, down, left, right) <= radius
    assert min(up, down, left, right) >= radius - 6  # it does reach far (the radius is not loose)


def test_bgr_channel_order_flips_input_and_outputs():
    torch.manual_seed(0)
    model = Smoother(width=4, descriptor_blocks=1, coarse_blocks=1, refine_blocks=1).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        rgb_out = model(x.flip(1))
        model.channel_order = "bgr"
        bgr_out = model(x)
    assert torch.equal(bgr_out.coarse, rgb_out.coarse.flip(1))
    assert torch.equal(bgr_out.residual, rgb_out.residual.flip(1))
    assert torch.equal(bgr_out.edge_logits, rgb_out.edge_logits)
