"""DeepLabV3+ MobileNetV2 segmenter: VainF layout, dilations, padding rule, sizes, gradients."""
import pytest
import torch
import torch.nn.functional as F

from csgis.models.segmenter import (
    DeepLabV3Plus,
    InvertedResidual,
    aspp_rates,
    deeplabv3plus_mobilenet,
    imagenet_normalize,
)

# Total parameters of DeepLabV3Plus-Pytorch's deeplabv3plus_mobilenet(num_classes=21), derived by
# hand from network/backbone/mobilenetv2.py and network/_deeplab.py (VainF, commit 4e1087d):
#   backbone (stem conv3x3 3->32 + BN, 17 inverted residual blocks, no 1x1->1280): 1,811,712
#     (low_level_features 15,792 + high_level_features 1,795,920)
#   project 24->48 + BN: 1,248
#   ASPP 1x1 320*256 + 3 x 3x3 320*256*9 + pooling 320*256 + project 1280*256, each + BN(256): 2,706,432
#   classifier 3x3 304*256*9 + BN(256) + 1x1 256*21 + 21 bias: 706,325
# = 5,225,717.  `_layout` below recomputes it key by key.
VAINF_PARAMS_21 = 5_225_717
VAINF_STATE_ENTRIES = 356  # 179 parameters + 59 BatchNorms x 3 buffers (incl. num_batches_tracked)

# (expand_ratio, in, out) of MobileNetV2 features[1..17], from the table t,c,n,s in mobilenetv2.py.
BLOCKS = ([(1, 32, 16)] + [(6, 16, 24), (6, 24, 24)] + [(6, 24, 32)] + [(6, 32, 32)] * 2
          + [(6, 32, 64)] + [(6, 64, 64)] * 3 + [(6, 64, 96)] + [(6, 96, 96)] * 2
          + [(6, 96, 160)] + [(6, 160, 160)] * 2 + [(6, 160, 320)])

# A representative subset of VainF key names and shapes, written out by hand.
VAINF_KEYS = {
    "backbone.low_level_features.0.0.weight": (32, 3, 3, 3),
    "backbone.low_level_features.0.1.running_var": (32,),
    "backbone.low_level_features.1.conv.0.0.weight": (32, 1, 3, 3),  # t=1: no expansion conv
    "backbone.low_level_features.1.conv.1.weight": (16, 32, 1, 1),
    "backbone.low_level_features.1.conv.2.bias": (16,),
    "backbone.low_level_features.3.conv.0.0.weight": (144, 24, 1, 1),
    "backbone.low_level_features.3.conv.3.num_batches_tracked": (),
    "backbone.high_level_features.4.conv.0.0.weight": (144, 24, 1, 1),  # slicing keeps index 4
    "backbone.high_level_features.14.conv.1.0.weight": (576, 1, 3, 3),
    "backbone.high_level_features.17.conv.2.weight": (320, 960, 1, 1),
    "backbone.high_level_features.17.conv.3.running_mean": (320,),
    "classifier.project.0.weight": (48, 24, 1, 1),
    "classifier.project.1.weight": (48,),
    "classifier.aspp.convs.0.0.weight": (256, 320, 1, 1),
    "classifier.aspp.convs.3.0.weight": (256, 320, 3, 3),
    "classifier.aspp.convs.3.1.running_var": (256,),
    "classifier.aspp.convs.4.1.weight": (256, 320, 1, 1),  # index 0 is the AdaptiveAvgPool2d
    "classifier.aspp.convs.4.2.bias": (256,),
    "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
    "classifier.aspp.project.1.running_mean": (256,),
    "classifier.classifier.0.weight": (256, 304, 3, 3),
    "classifier.classifier.1.weight": (256,),
    "classifier.classifier.3.weight": (21, 256, 1, 1),
    "classifier.classifier.3.bias": (21,),
}


def _bn(prefix, channels):
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,), f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": ()}


def _layout(num_classes=21):
    """Every key and shape of VainF's deeplabv3plus_mobilenet, built from its module structure."""
    keys = {"backbone.low_level_features.0.0.weight": (32, 3, 3, 3),
            **_bn("backbone.low_level_features.0.1", 32)}
    for index, (t, cin, cout) in enumerate(BLOCKS, start=1):
        part = "low_level_features" if index < 4 else "high_level_features"
        p, hidden = f"backbone.{part}.{index}.conv", cin * t
        i = 0
        if t != 1:  # ConvBNReLU(1x1) = Sequential(conv, bn, relu6)
            keys.update({f"{p}.0.0.weight": (hidden, cin, 1, 1), **_bn(f"{p}.0.1", hidden)})
            i = 1
        keys.update({f"{p}.{i}.0.weight": (hidden, 1, 3, 3), **_bn(f"{p}.{i}.1", hidden),
                     f"{p}.{i + 1}.weight": (cout, hidden, 1, 1), **_bn(f"{p}.{i + 2}", cout)})
    keys.update({"classifier.project.0.weight": (48, 24, 1, 1), **_bn("classifier.project.1", 48)})
    for b, k in enumerate((1, 3, 3, 3)):
        keys.update({f"classifier.aspp.convs.{b}.0.weight": (256, 320, k, k),
                     **_bn(f"classifier.aspp.convs.{b}.1", 256)})
    keys.update({"classifier.aspp.convs.4.1.weight": (256, 320, 1, 1),
                 **_bn("classifier.aspp.convs.4.2", 256),
                 "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
                 **_bn("classifier.aspp.project.1", 256),
                 "classifier.classifier.0.weight": (256, 304, 3, 3),
                 **_bn("classifier.classifier.1", 256),
                 "classifier.classifier.3.weight": (num_classes, 256, 1, 1),
                 "classifier.classifier.3.bias": (num_classes,)})
    return keys


def _randomize_bn_statistics(model, generator):
    """Non-trivial BN statistics, so that padding differences reach the output."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {os_: deeplabv3plus_mobilenet(21, os_).eval() for os_ in (8, 16)}


def test_aspp_rates_and_backbone_dilations(models):
    assert aspp_rates(models[16]) == (6, 12, 18)
    assert aspp_rates(models[8]) == (12, 24, 36)
    # (stride, dilation) of high-level blocks 4..17: a stage whose stride became dilation keeps
    # the previous dilation in its first block (blocks 14 at OS16; 7 and 14 at OS8).
    expected = {
        16: [(2, 1), (1, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1),
             (1, 1), (1, 2), (1, 2), (1, 2)],
        8: [(2, 1), (1, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2),
            (1, 2), (1, 4), (1, 4), (1, 4)],
    }
    for os_, model in models.items():
        high = model.backbone.high_level_features
        assert [(b.stride, b.dilation) for b in high] == expected[os_]
        assert [(b.stride, b.dilation) for b in model.backbone.low_level_features[1:]] == \
            [(1, 1), (2, 1), (1, 1)]
        stem = model.backbone.low_level_features[0][0]
        assert (stem.stride, stem.padding) == ((2, 2), (0, 0))
    with pytest.raises(ValueError, match="output_stride"):
        deeplabv3plus_mobilenet(output_stride=32)


def test_state_dict_equals_vainf_layout(models):
    layout = _layout()
    assert len(layout) == VAINF_STATE_ENTRIES
    assert sum(torch.Size(s).numel() for k, s in layout.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == VAINF_PARAMS_21
    for model in models.values():
        sd = model.state_dict()
        assert list(sd) == list(layout)  # same order as VainF's module registration
        assert {k: tuple(v.shape) for k, v in sd.items()} == layout
        assert {k: tuple(sd[k].shape) for k in VAINF_KEYS} == VAINF_KEYS
        assert sum(p.numel() for p in model.parameters()) == VAINF_PARAMS_21
    cityscapes = deeplabv3plus_mobilenet(num_classes=19)
    assert isinstance(cityscapes, DeepLabV3Plus) and cityscapes.num_classes == 19
    assert sum(p.numel() for p in cityscapes.parameters()) == VAINF_PARAMS_21 - 2 * (256 + 1)


def test_vainf_checkpoint_loads_strictly(tmp_path, models):
    generator = torch.Generator().manual_seed(1)
    state = {k: (torch.randn(s, generator=generator) if s else torch.tensor(7))
             for k, s in _layout().items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    path = tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth"
    torch.save({"model_state": state, "cur_itrs": 30000, "best_score": 0.711}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    model = deeplabv3plus_mobilenet(21, 16)
    result = model.load_state_dict(loaded["model_state"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.classifier.aspp.convs[4][1].weight,
                       state["classifier.aspp.convs.4.1.weight"])
    # Sequential keys are "4".."17", so name the block rather than index it by position.
    assert torch.equal(model.get_submodule("backbone.high_level_features.13").conv[1][0].weight,
                       state["backbone.high_level_features.13.conv.1.0.weight"])
    # The same weights at output stride 8 (how the release builds it) load as well.
    deeplabv3plus_mobilenet(21, 8).load_state_dict(loaded["model_state"], strict=True)


@pytest.mark.parametrize("output_stride,high_size", [(16, (6, 9)), (8, (12, 17))])
def test_odd_input_sizes(models, output_stride, high_size):
    model = models[output_stride]
    x = torch.rand(1, 3, 97, 131)
    with torch.no_grad():
        low, high = model.backbone(x)
        logits = model(x)
    # Stem without padding: (97-3)//2+1 = 48, (131-3)//2+1 = 65; then ceil-halving per stride 2.
    assert tuple(low.shape) == (1, 24, 24, 33)
    assert tuple(high.shape) == (1, 320) + high_size
    assert tuple(logits.shape) == (1, 21, 97, 131)
    with torch.no_grad():
        assert tuple(model(torch.rand(2, 3, 33, 8)).shape) == (2, 21, 33, 8)


def test_eval_mode_is_deterministic(models):
    x = imagenet_normalize(torch.rand(1, 3, 41, 37, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        first, second = models[16](x), models[16](x)
    assert torch.equal(first, second)
    assert first.std() > 0


def test_gradient_reaches_the_input():
    torch.manual_seed(3)
    model = deeplabv3plus_mobilenet(21, 8).eval()
    model.requires_grad_(False)  # frozen, as in training; the smoother still needs gradients
    x = torch.rand(1, 3, 45, 39, requires_grad=True)
    label = torch.randint(0, 21, (1, 45, 39))
    label[:, :5] = 255
    F.cross_entropy(model(imagenet_normalize(x)), label, ignore_index=255).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.9
    assert all(p.grad is None for p in model.parameters())


def test_imagenet_normalize_values_and_gradient():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (mean + std).expand(2, 3, 4, 5).clone().requires_grad_(True)
    out = imagenet_normalize(x)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-6)
    assert torch.allclose(imagenet_normalize(mean), torch.zeros(1, 3, 1, 1), atol=1e-7)
    out.sum().backward()
    assert torch.allclose(x.grad, (1 / std).expand_as(x))


def _bn_eval(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("cin,cout,stride,dilation", [(8, 8, 1, 2), (8, 16, 2, 1), (6, 6, 1, 4)])
def test_block_pads_input_once_then_convolves_without_padding(cin, cout, stride, dilation):
    generator = torch.Generator().manual_seed(4)
    block = InvertedResidual(cin, cout, stride, dilation, expand_ratio=6).eval()
    _randomize_bn_statistics(block, generator)
    x = torch.randn(2, cin, 11, 9, generator=generator)
    expand, depthwise, linear, linear_bn = block.conv
    hidden = cin * 6

    def by_hand(padded, depthwise_padding):
        h = F.relu6(_bn_eval(F.conv2d(padded, expand[0].weight), expand[1]))
        h = F.conv2d(h, depthwise[0].weight, stride=stride, padding=depthwise_padding,
                     dilation=dilation, groups=hidden)
        h = F.relu6(_bn_eval(h, depthwise[1]))
        h = _bn_eval(F.conv2d(h, linear.weight), linear_bn)
        return x + h if (stride == 1 and cin == cout) else h

    d = dilation
    expected = by_hand(F.pad(x, (d, d, d, d)), 0)
    with torch.no_grad():
        out = block(x)
        # torchvision's rule (zero padding at the depthwise conv) differs only at the border.
        depthwise_padded = by_hand(x, d)
    assert out.shape == expected.shape == (2, cout, -(-11 // stride), -(-9 // stride))
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)
    inner = (slice(None), slice(None), slice(d, -d), slice(d, -d))
    if stride == 1:
        assert torch.allclose(out[inner], depthwise_padded[inner], atol=1e-5, rtol=0)
    assert (out - depthwise_padded).abs().max() > 1e-2


def test_image_pooling_branch_is_spatially_constant(models):
    pooling = models[16].classifier.aspp.convs[4]
    features = torch.randn(1, 320, 5, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = pooling(features)
        expected = F.relu(_bn_eval(F.conv2d(features.mean((2, 3), keepdim=True), pooling[1].weight),
                                   pooling[2]))
    assert out.shape == (1, 256, 5, 7)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-6)
