"""Where models run: device selection everywhere, and the quantizers, layers and joint step on
CUDA (those run only where a GPU is present and are skipped with a one-line reason otherwise)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedqdnn.accelerator import (
    CPU,
    cuda_unavailable_reason,
    parse_device,
    release_cuda_memory,
    select_device,
)
from fedqdnn.config import FederatedConfig
from fedqdnn.data import load_dataset
from fedqdnn.data_source import DataSource
from fedqdnn.device import device_for, load_state, plan_round, train_round
from fedqdnn.fleet import initial_model
from fedqdnn.layers import GlobalAvgPool2d
from fedqdnn.losses import ConsistencyConfig
from fedqdnn.models import build_model
from fedqdnn.quant import quantize_activation, quantize_activation_clipped, quantize_weight
from fedqdnn.training import OptimConfig, evaluate, fit, joint_step, make_optimizer

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=str(cuda_unavailable_reason()))
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the error of a machine without CUDA")


# ---------------------------------------------------------------- selection (any machine)


@pytest.mark.parametrize(
    "spec, expected", [("auto", "auto"), (" cpu ", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda:3")]
)
def test_parse_device_accepts_the_documented_forms(spec, expected):
    assert parse_device(spec) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "CUDA", "", "cpu:0", 0, None])
def test_parse_device_refuses_anything_else(spec):
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda or cuda:N"):
        parse_device(spec)


def test_cpu_and_actor_without_gpu_share_compute_on_cpu():
    assert select_device("cpu") == CPU
    assert select_device("auto", gpu_share=False) == CPU  # never looks at CUDA


def test_auto_outside_ray_follows_cuda_visibility():
    expected = "cuda" if HAS_CUDA else "cpu"
    assert select_device("auto").type == expected


def test_explicit_cuda_in_actor_without_share_names_the_flag():
    with pytest.raises(ValueError, match="device = 'cuda:1' is not allowed: Ray gave .*--gpus"):
        select_device("cuda:1", gpu_share=False)


@needs_no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_clear_line(spec):
    with pytest.raises(ValueError) as err:
        select_device(spec)
    message = str(err.value)
    assert message.startswith(f"device = {spec!r} is not allowed: CUDA is not available here")
    assert message.endswith("use auto or cpu") and "\n" not in message


def test_config_device_key_defaults_to_auto_and_round_trips():
    cfg = FederatedConfig().replace(device="cpu")
    assert FederatedConfig().device == "auto"
    assert cfg.to_flat()["device"] == "cpu"
    with pytest.raises(ValueError, match="device = 'tpu' is not allowed"):
        FederatedConfig().replace(device="tpu")


def test_global_pool_on_cpu_is_adaptive_pooling_bit_for_bit():
    x = torch.randn(4, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    pooled = GlobalAvgPool2d()(x)
    assert torch.equal(pooled, F.adaptive_avg_pool2d(x, 1))
    assert torch.allclose(pooled, x.sum(dim=(2, 3), keepdim=True) / 35, atol=1e-6)


def test_device_data_and_model_share_the_selected_device():
    cfg = FederatedConfig(data=DataSource(dataset="synthetic"), num_clients=3, rounds=1)
    device = device_for(cfg, 1, CPU)
    tensors = (device.x_train, device.y_train, device.x_test, device.y_test)
    assert {t.device for t in tensors} == {CPU}
    assert {p.device for p in device.model.parameters()} == {CPU}


# ---------------------------------------------------------------- CUDA (GPU machines only)


def _quantizer_outputs(where: torch.device, bits: int) -> list[np.ndarray]:
    """Forward values and gradients of the three quantizers for fixed inputs on ``where``."""
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(300, generator=gen).to(where).requires_grad_()
    x = (1.5 * torch.randn(300, generator=gen)).to(where).requires_grad_()
    alpha = torch.tensor([0.8], device=where, requires_grad=True)
    g = torch.randn(300, generator=gen).to(where)
    outs = []
    for out in (
        quantize_weight(w, bits),
        quantize_activation(x, bits),
        quantize_activation_clipped(x, alpha, bits),
    ):
        outs.append(out.detach().cpu().numpy())
    (quantize_weight(w, bits) * g).sum().backward()
    (quantize_activation(x, bits) * g).sum().backward()
    x_grad_plain = x.grad.detach().cpu().numpy().copy()
    x.grad = None
    (quantize_activation_clipped(x, alpha, bits) * g).sum().backward()
    alpha_grad = alpha.grad.cpu().numpy() if alpha.grad is not None else np.zeros(1)  # 32: unused
    return [*outs, w.grad.cpu().numpy(), x_grad_plain, x.grad.cpu().numpy(), alpha_grad]


@needs_cuda
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32])
def test_quantizers_on_cuda_match_cpu(bits):
    on_gpu = _quantizer_outputs(select_device("cuda"), bits)
    on_cpu = _quantizer_outputs(CPU, bits)
    for gpu_value, cpu_value in zip(on_gpu, on_cpu, strict=True):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-5, atol=1e-5)


def _trained_state(model_name: str, where: torch.device, augment: bool) -> dict:
    """A few joint steps (all modes, learnable clip) from a fixed start on ``where``."""
    torch.manual_seed(0)
    shape, channels = ((3, 32, 32), 3) if model_name == "preact_resnet20" else ((1, 8, 8), 1)
    x = torch.randn(96, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.arange(96) % 10
    model = build_model(model_name, (2, 4, 32), 10, channels, learnable_clip=True).to(where)
    config = OptimConfig(batch_size=32)
    fit(model, x.to(where), y.to(where), (2, 4, 32), ConsistencyConfig(), config, 1, 7, augment)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@needs_cuda
@pytest.mark.parametrize("model_name, augment", [("digits_cnn", False), ("preact_resnet20", True)])
def test_joint_training_on_cuda_is_deterministic_and_close_to_cpu(model_name, augment):
    cuda = select_device("cuda")  # also switches on the deterministic settings
    first = _trained_state(model_name, cuda, augment)
    second = _trained_state(model_name, cuda, augment)
    assert all(torch.equal(first[k], second[k]) for k in first)  # bit for bit, run to run
    on_cpu = _trained_state(model_name, CPU, augment)
    # 3 Adam steps (lr 1e-3) from the same start and batches: an update differs at most where
    # a gradient's sign does, so the states stay close although levels may round differently
    for key, value in first.items():
        assert torch.allclose(value.double(), on_cpu[key].double(), rtol=0.05, atol=0.02), key


@needs_cuda
def test_joint_step_runs_on_cuda_and_matches_cpu_first_loss():
    data = load_dataset("mnist1d")
    x, y = data.x_train[:64], data.y_train[:64]
    torch.manual_seed(0)
    cpu_model = build_model("mnist1d_cnn", (2, 4, 8, 32), 10, 1, learnable_clip=True)
    cuda = select_device("cuda")
    gpu_model = copy.deepcopy(cpu_model).to(cuda)
    losses = []
    for model, where in ((cpu_model, CPU), (gpu_model, cuda)):
        optimizer, _ = make_optimizer(model, OptimConfig(), 1)
        loss, _ = joint_step(
            model, x.to(where), y.to(where), (2, 4, 8, 32), ConsistencyConfig(), optimizer
        )
        losses.append(loss)
    assert np.isclose(losses[0], losses[1], rtol=1e-4)
    assert all(p.is_cuda for p in gpu_model.parameters())


@needs_cuda
def test_device_round_on_cuda_uploads_numpy_and_evaluates_cpu_data():
    cfg = FederatedConfig(
        data=DataSource(dataset="synthetic"), num_clients=3, rounds=1, device="cuda"
    )
    cuda = select_device("cuda")
    device = device_for(cfg, 0, cuda)
    assert device.x_train.is_cuda and next(device.model.parameters()).is_cuda
    load_state(device.model, initial_model(cfg).state_dict())
    plan = plan_round(cfg, device, 1, 0)
    update = train_round(cfg, device, plan, 1)
    assert all(isinstance(v, np.ndarray) for v in update.state.values())
    accuracy, _ = evaluate(device.model, device.x_test.cpu(), device.y_test.cpu(), device.top_mode)
    assert 0.0 <= accuracy <= 1.0


@needs_cuda
def test_release_gives_cached_gpu_memory_back():
    # measured against what is reserved before: earlier CUDA tests in the same process keep
    # live memory (cuBLAS workspaces and the like) that no cache release may free
    release_cuda_memory()
    before = torch.cuda.memory_reserved()
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    del block
    assert torch.cuda.memory_reserved() >= before + 64 * 2**20  # freed, still cached
    release_cuda_memory()
    assert torch.cuda.memory_reserved() == before


@needs_no_cuda
def test_gpu_benchmark_exits_with_one_line_without_cuda(tmp_path):
    import subprocess
    import sys

    from tests.e2e_helpers import REPO

    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("benchmarks/gpu.py: CUDA is not available here")
    assert done.stderr.count("\n") == 1 and not out.exists()


def test_intra_op_threads_sets_and_restores_the_count_even_on_error():
    from fedqdnn.accelerator import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("a failed evaluation")
    assert torch.get_num_threads() == before
