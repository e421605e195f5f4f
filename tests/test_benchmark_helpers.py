"""Helpers of benchmarks/model.py whose answers are reported as figures: the largest-batch
search and the peak FLOP/s behind MFU."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "bench_model", Path(__file__).resolve().parents[1] / "benchmarks" / "model.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("capacity, start", [(1000, 16), (5, 16), (16, 16), (1, 4), (777, 1)])
def test_largest_batch_finds_the_capacity_within_3_percent(capacity, start):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= capacity

    b = bench.largest_batch(fits, start=start)
    assert b <= capacity and capacity - b <= max(1, b // 32)
    assert len(tried) < 30


def test_largest_batch_edges():
    assert bench.largest_batch(lambda b: False) == 0
    assert bench.largest_batch(lambda b: True, start=3, limit=100) == 100


def test_peak_tflops_by_device_name():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert bench.peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.2
    assert bench.peak_tflops("NVIDIA H200", "fp32") == 66.9
    assert bench.peak_tflops("some CPU", "fp32") is None
    assert bench.peak_tflops("some CPU", "fp32", override=2.0) == 2.0
