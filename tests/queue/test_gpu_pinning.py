"""`segbench worker --gpu auto`: each worker on a machine takes a GPU no other holds."""

from __future__ import annotations

import os

import pytest

from worker.queue import gpu
from worker.training.device import resolve_device


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield tmp_path / "locks"
    for handle in gpu._held_locks:
        handle.close()
    gpu._held_locks.clear()


def test_workers_take_different_gpus_until_none_is_left(two_gpus, monkeypatch):
    assert gpu.pin_gpu("auto", two_gpus) == "gpu 0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu.pin_gpu("auto", two_gpus) == "gpu 1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(ValueError, match="already has a worker"):
        gpu.pin_gpu("auto", two_gpus)


def test_a_gpu_is_free_again_when_its_worker_ends(two_gpus, monkeypatch):
    assert gpu.pin_gpu("auto", two_gpus) == "gpu 0"
    gpu._held_locks.pop().close()  # the worker process ended
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu.pin_gpu("auto", two_gpus) == "gpu 0"


def test_explicit_choices_and_an_existing_pin_are_kept(two_gpus, monkeypatch):
    assert gpu.pin_gpu("1", two_gpus) == "gpu 1"
    assert gpu.pin_gpu("auto", two_gpus) == "CUDA_VISIBLE_DEVICES=1"
    assert gpu.pin_gpu("none", two_gpus) == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert str(resolve_device("auto")) == "cpu"
    with pytest.raises(ValueError, match="Unknown --gpu 'two'"):
        gpu.pin_gpu("two", two_gpus)
