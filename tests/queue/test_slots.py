"""`segbench worker --slots`: how many runs one worker trains at once on its device,
from a measured cell table on a GPU (worker.queue.slots). The GPU cases are computed
from the table and the memory given: no GPU is needed to check the rule."""

from __future__ import annotations

import json

import pytest

from worker.queue.slots import CONTEXT_MIB, MAX_SLOTS, SlotsError, choose_slots

H200_MIB = 143_771


def table(tmp_path, **cells):
    path = tmp_path / "cells.json"
    rows = {k.replace("__", "/"): {"step_s": 0.01, "memory_mib": v} for k, v in cells.items()}
    path.write_text(json.dumps({"device": "gpu", "image_size": 512, "cells": rows}))
    return path


def test_a_number_is_taken_as_given_anywhere():
    assert choose_slots("3", device="cpu", gpu_memory_mib=None, table=None)[0] == 3
    assert choose_slots("12", device="gpu 0", gpu_memory_mib=8000, table=None)[0] == 12


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "many", ""])
def test_anything_else_is_one_sentence(bad):
    with pytest.raises(SlotsError, match="--slots takes auto or a whole number from 1"):
        choose_slots(bad, device="cpu", gpu_memory_mib=None, table=None)


def test_auto_is_one_on_the_cpu_and_on_a_gpu_without_a_measured_table(tmp_path):
    assert choose_slots("auto", device="cpu", gpu_memory_mib=None, table=None)[0] == 1
    slots, why = choose_slots("auto", device="gpu 0", gpu_memory_mib=H200_MIB, table=None)
    assert slots == 1 and "no measured cell table" in why
    empty = table(tmp_path)  # a table without memory rows (a CPU dry run writes such)
    assert choose_slots("auto", device="gpu 0", gpu_memory_mib=H200_MIB, table=empty)[0] == 1


def test_auto_fits_the_largest_measured_cell_in_the_gpus_memory(tmp_path):
    cells = table(tmp_path, unet__resnet18=1_400, fpn__densenet161=9_400)
    slots, why = choose_slots("auto", device="gpu 0", gpu_memory_mib=80_000, table=cells)
    assert slots == int(0.8 * 80_000 // (9_400 + CONTEXT_MIB)) == 6
    assert "fpn/densenet161" in why and "9,400 MiB" in why
    # a big GPU is capped; a small one still gets one slot
    assert choose_slots("auto", device="gpu 0", gpu_memory_mib=H200_MIB, table=cells)[0] == 8
    assert MAX_SLOTS == 8
    assert choose_slots("auto", device="gpu 0", gpu_memory_mib=6_000, table=cells)[0] == 1


def test_an_unreadable_table_is_one_sentence(tmp_path):
    broken = tmp_path / "cells.json"
    broken.write_text("{not json")
    with pytest.raises(SlotsError, match="cannot be read.*SEGBENCH_CELL_TABLE"):
        choose_slots("auto", device="gpu 0", gpu_memory_mib=H200_MIB, table=broken)
