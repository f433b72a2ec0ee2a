"""Small helpers shared by several test files."""
import torch


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
