"""Switchable layers and models: mode switching, bit-specific BN, state round-trip, joint step."""

import pytest
import torch

from fedqdnn.bitmodes import mode_of_state_key
from fedqdnn.calibration import recalibrate_bn
from fedqdnn.layers import BitBatchNorm2d, BitLinear
from fedqdnn.losses import ConsistencyConfig, consistency_loss
from fedqdnn.models import MODELS, build_model, default_model_for
from fedqdnn.training import OptimConfig, joint_step, make_optimizer
from strategies.aggregation import expected_keys, shared_keys

SHAPES = {
    "digits_cnn": (1, 8, 8),
    "mnist1d_cnn": (1, 40),
    "preact_resnet20": (3, 32, 32),
    "femnist_cnn": (1, 28, 28),
}
MODES = (2, 4, 8, 32)


def _model(name="digits_cnn", modes=MODES, **kw):
    torch.manual_seed(0)
    return build_model(name, modes, 10, SHAPES[name][0], **kw)


def _x(name="digits_cnn", n=16, seed=0):
    return torch.randn(n, *SHAPES[name], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_mode_gives_different_outputs(name):
    model = _model(name).eval()
    x = _x(name, n=4)
    outs = {}
    for bits in MODES:
        with model.bits(bits):
            outs[bits] = model(x)
        assert outs[bits].shape == (4, 10)
    for a in MODES:
        for b in MODES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_set_bits_selects_matching_bn_and_leaves_others_untouched():
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_bits(4)
    model(_x())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "training-mode forward must update the active BN's statistics"
    assert all(".bits4." in k for k in changed), changed


def test_untouched_modes_bn_stats_do_not_move_when_another_mode_trains():
    model = _model().train()
    opt, _ = make_optimizer(model, OptimConfig(cosine=False), 1)
    y = torch.randint(0, 10, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items() if "bns." in k}
    for _ in range(3):
        joint_step(model, _x(), y, (2,), ConsistencyConfig(), opt)
    after = model.state_dict()
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        if ".bits2." in key:
            continue
        assert not moved, f"{key} moved while only 2-bit trained"
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if ".bits2.running" in k)


def test_unsupported_mode_raises_naming_allowed_modes():
    model = _model(modes=(2, 32))
    with pytest.raises(ValueError, match="2, 32"):
        model.set_bits(4)
    with pytest.raises(ValueError, match="allowed"):
        _model(modes=(2, 33))


@pytest.mark.parametrize("bits", MODES)
def test_femnist_cnn_is_leaf_sized_and_gives_62_logits_at_every_mode(bits):
    torch.manual_seed(0)
    model = build_model("femnist_cnn", MODES, 62, 1).eval()
    # LEAF's CNN: 5x5x32 conv, 5x5x64 conv, 3136 -> 2048 dense, 2048 -> 62 (weights, no biases
    # but the last layer's; plus per-mode BN and learnable clips)
    dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in dense] == [(2048, 7 * 7 * 64), (62, 2048)]
    assert tuple(model.stem.weight.shape) == (32, 1, 5, 5)
    with model.bits(bits):
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 62)
    assert type(dense[0]).__name__ == "QuantLinear" and type(dense[1]) is torch.nn.Linear


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((1, 8, 8), "digits_cnn"),  # sklearn digits
        ((1, 40), "mnist1d_cnn"),
        ((3, 32, 32), "preact_resnet20"),  # CIFAR
        ((1, 28, 28), "femnist_cnn"),  # FEMNIST, MNIST
        ((3, 28, 28), "femnist_cnn"),
        ((3, 16, 20), "digits_cnn"),  # smaller than 28: adaptive pooling
        ((3, 64, 48), "preact_resnet20"),
    ],
)
def test_default_model_follows_the_input_shape(shape, expected):
    assert default_model_for(shape) == expected
    model = build_model(expected, (2, 32), 5, shape[0]).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 5)  # and the chosen model runs on it


@pytest.mark.parametrize("shape", [(1, 100), (4,), (1, 2, 8, 8)])
def test_no_default_model_for_other_shapes(shape):
    with pytest.raises(ValueError, match="set model to one of: digits_cnn") as err:
        default_model_for(shape)
    assert "\n" not in str(err.value)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="allowed: digits_cnn"):
        build_model("vgg", MODES, 10, 1)


def test_bits_context_restores_previous_mode():
    model = _model()
    model.set_bits(8)
    with model.bits(2):
        assert model.active_bits == 2
    assert model.active_bits == 8
    bns = [m for m in model.modules() if isinstance(m, BitBatchNorm2d)]
    assert all(bn.bits == 8 for bn in bns)


def test_state_dict_round_trip_preserves_every_mode():
    model = _model().train()
    for bits in MODES:
        with model.bits(bits):
            model(_x(seed=bits))
    model.eval()
    clone = _model()
    clone.load_state_dict(model.state_dict())
    clone.eval()
    for bits in MODES:
        with model.bits(bits), clone.bits(bits):
            assert torch.equal(model(_x()), clone(_x()))


def test_first_and_last_layers_are_full_precision():
    model = _model()
    assert type(model.stem) is torch.nn.Conv2d
    assert type(model.body[-1]) is torch.nn.Linear


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bit_specific_head_gives_each_mode_its_own_classifier(name):
    model = _model(name, head="bit-specific").eval()
    head = model.body[-1]
    assert isinstance(head, BitLinear)
    heads = {b: head.heads[f"bits{b}"] for b in MODES}
    for b in MODES:  # round 0 is the shared model: every mode starts from one head
        assert torch.equal(heads[b].weight, heads[2].weight)
        assert torch.equal(heads[b].bias, heads[2].bias)
    x = _x(name, n=4)
    before = {}
    for b in MODES:
        with model.bits(b):
            before[b] = model(x)
    with torch.no_grad():
        heads[2].bias += 1.0  # moves the 2-bit logits by exactly +1, no other mode's
    for b in MODES:
        with model.bits(b):
            after = model(x)
        shift = 1.0 if b == 2 else 0.0
        torch.testing.assert_close(after, before[b] + shift)


def test_bit_specific_head_entries_are_per_mode_state():
    state = {k: v.numpy() for k, v in _model(head="bit-specific").state_dict().items()}
    head_keys = [k for k in state if ".heads." in k]
    assert {mode_of_state_key(k) for k in head_keys} == set(MODES)
    assert not set(head_keys) & set(shared_keys(state))
    two_bit_update = expected_keys(state, (2,))
    assert {k for k in head_keys if k in two_bit_update} == {k for k in head_keys if ".bits2." in k}
    shared_head = _model().state_dict()
    last = len(_model().body) - 1
    assert f"body.{last}.weight" in shared_head  # the shared layout keeps its keys


def test_shared_bn_ablation_has_one_bn_for_all_modes():
    model = _model(bn="shared")
    keys = [k for k in model.state_dict() if "bns." in k]
    assert keys and all(".shared." in k for k in keys)


def test_shared_affine_bn_keeps_statistics_per_mode_and_one_affine():
    from fedqdnn.bitmodes import mode_of_state_key

    model = _model(bn="shared-affine")
    state = model.state_dict()
    per_mode = {k for k in state if mode_of_state_key(k) is not None and "bns." in k}
    assert per_mode and all(k.rsplit(".", 1)[1] in _STATS for k in per_mode)
    affine = [k for k in state if k.endswith((".weight", ".bias")) and "bns" not in k]
    assert any(k == "body.0.weight" for k in affine) and any(k == "body.0.bias" for k in affine)
    # the output at mode b is (x - mean_b) / sqrt(var_b + eps) * weight + bias
    layer = model.body[0]
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 2.0, layer.weight.numel()))
        layer.bias.fill_(0.25)
        stats = layer.bn_for(2)
        stats.running_mean.fill_(1.0)
        stats.running_var.fill_(4.0)
    layer.eval()
    layer.set_bits(2)
    x = torch.randn(3, layer.weight.numel(), 4, 4)
    expected = (x - 1.0) / torch.sqrt(torch.tensor(4.0 + stats.eps))
    expected = expected * layer.weight.view(1, -1, 1, 1) + 0.25
    assert torch.allclose(layer(x), expected, atol=1e-6)


_STATS = ("running_mean", "running_var", "num_batches_tracked")


def test_joint_step_gradient_equals_separate_passes():
    """Running the stem once per batch gives the same update as full passes per mode."""
    x, y = _x(), torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3))
    a, b = _model(), _model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    joint_step(a, x, y, MODES, ConsistencyConfig(), opt_a)
    logits = {}
    for bits in sorted(MODES, reverse=True):
        b.set_bits(bits)
        logits[bits] = b(x)
    loss, _ = consistency_loss(logits, y)
    loss.backward()
    torch.optim.SGD(b.parameters(), lr=0.1).step()
    for (key, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa.float(), pb.float(), atol=1e-6), key


def test_recalibration_recomputes_stats_from_data():
    model = _model()
    x = _x(n=64)
    recalibrate_bn(model, x, bits=4, batch_size=64)
    bn = model.body[0].bn_for(4)
    with torch.no_grad():
        h = model.stem(x)
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    untouched = model.body[0].bn_for(2)
    assert torch.equal(untouched.running_mean, torch.zeros_like(untouched.running_mean))
    assert bn.momentum == 0.1


def test_learnable_clip_parameters_per_quantized_mode():
    model = _model(learnable_clip=True)
    clips = [k for k in model.state_dict() if ".clip." in k]
    assert {k.split(".")[-1] for k in clips} == {"bits2", "bits4", "bits8"}
