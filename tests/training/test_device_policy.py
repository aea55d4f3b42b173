"""The device policy on CPU: every speed switch off, the CUDA-graph path eager, the
protocol's math settings applied and recorded, the graph guard catching a replaced
tensor, and ops without a deterministic kernel named instead of hidden."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from db.grid import RunSpec
from db.protocol import Protocol
from worker.training import models
from worker.training.device import DevicePolicy, math_mode
from worker.training.steps import EagerStep, GraphGuard, GraphReplaced, training_step

RUN = RunSpec("lung-segmentation", "unet", "resnet18", "random")


@pytest.fixture(autouse=True)
def restore_torch_switches():
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


def test_on_cpu_every_speed_switch_is_off_and_a_cuda_graph_asked_for_stays_eager():
    policy = DevicePolicy("cpu", Protocol(), cuda_graphs=True, cudnn_benchmark=True)
    s = policy.switches
    assert not (s.channels_last or s.fused_adam or s.capturable or s.cuda_graphs)
    assert s.checkpoint_interval_s == 0.0
    model = models.build_model(RUN)
    step = training_step(model, policy.optimizer(model, 1e-3), None, None, None, None, policy, 2)
    assert type(step) is EagerStep and not step.graphed


def test_precision_and_determinism_come_from_the_protocol():
    assert math_mode(DevicePolicy("cpu", Protocol()).switches, torch.device("cpu")) == "ieee-fp32"
    tf32 = DevicePolicy("cpu", Protocol(train_precision="tf32"))
    # a CPU has no TF32: the protocol says tf32, the run's environment says what ran
    assert tf32.switches.tf32 and tf32.environment()["math"] == "ieee-fp32"
    bf16 = DevicePolicy("cpu", Protocol(train_precision="bf16"))
    assert bf16.environment()["math"] == "bf16-autocast"
    deterministic = DevicePolicy("cpu", Protocol(deterministic=True), cudnn_benchmark=True)
    assert deterministic.switches.deterministic and not deterministic.switches.cudnn_benchmark
    deterministic.configure()
    assert torch.are_deterministic_algorithms_enabled()
    DevicePolicy("cpu", Protocol()).configure()  # the next run of a warm worker
    assert not torch.are_deterministic_algorithms_enabled()


def test_an_op_without_a_deterministic_kernel_is_named_on_the_run():
    """torch's warning (warn_only=True), in its own words, becomes a name the run
    records; other warnings pass through untouched."""
    policy = DevicePolicy("cpu", Protocol(deterministic=True))
    message = (
        "upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, "
        "but you set 'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file "
        "an issue at https://github.com/pytorch/pytorch/issues to help us prioritize adding "
        "deterministic support for this operation."
    )
    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("always")
        with policy.training_math():
            warnings.warn(message, UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert policy.nondeterministic_ops == {"upsample_bilinear2d_backward_out_cuda"}
    assert [str(w.message) for w in outside] == ["something else"]


def test_the_seed_streams_follow_the_protocol():
    per_purpose = DevicePolicy("cpu", Protocol(seed=3))
    shuffle, augment = per_purpose.seed()
    assert shuffle.initial_seed() == Protocol(seed=3).stream_seed("shuffle")
    assert augment.initial_seed() == Protocol(seed=3).stream_seed("augment")
    assert torch.initial_seed() == Protocol(seed=3).stream_seed("init")
    shuffle, augment = DevicePolicy("cpu", Protocol(seed=3, seed_streams="shared")).seed()
    assert (shuffle.initial_seed(), augment.initial_seed(), torch.initial_seed()) == (3, 4, 3)


def _trained():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 8, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_the_graph_guard_refuses_a_replaced_tensor_and_allows_in_place_loads():
    model, optimizer = _trained()
    static = torch.zeros(2, dtype=torch.long)
    guard = GraphGuard(model, optimizer, static)
    guard.check()
    # a weight load copies into the captured tensors: still the same memory
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    guard.check()
    # an optimizer load from a checkpoint (a resume) brings new state tensors: refused
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    with pytest.raises(GraphReplaced, match="optimizer state 0.exp_avg"):
        guard.check()
    model, optimizer = _trained()
    guard = GraphGuard(model, optimizer, static)
    model[0].weight = torch.nn.Parameter(model[0].weight.detach().clone())
    with pytest.raises(GraphReplaced, match="parameter 0.weight was replaced"):
        guard.check()
