import pytest

from pivot_jax import model as M
from pivot_jax import throughput


class FakeDevice:
    def __init__(self, kind):
        self.device_kind = kind


@pytest.mark.parametrize("kind,peak", [("TPU v4", 275), ("TPU v5 lite", 197), ("TPU v5p", 459), ("TPU v6 lite", 918),
                                       ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H200", 989), ("cpu", None)])
def test_peaks_per_chip(kind, peak):
    assert throughput.peak_tflops(FakeDevice(kind)) == peak


def test_flops_per_token_of_llama2_7b():
    cfg = M.preset("llama2-7b")
    per_token = throughput.training_flops_per_token(cfg, 4096)
    matmul = 6_738_415_616 - 32000 * 4096
    assert per_token == 6 * matmul + 6 * 32 * 4096 * 4096
    assert 4.2e10 < per_token < 4.4e10  # the usual ~6.5 N per token at this length
