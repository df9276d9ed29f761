"""Training throughput and MFU from the wall time between batches (no device sync)."""
import time

from lightning.fabric.utilities.throughput import get_available_flops


class Throughput:
    """Tokens per second between consecutive training batches, and MFU when the device's peak is known
    (``peak_tflops``, or Lightning's table for known GPUs). ``flops_per_token``: training FLOPs per token."""

    def __init__(self, flops_per_token: float, peak_tflops: float | None = None):
        self.flops_per_token, self.peak_tflops = flops_per_token, peak_tflops
        self.peak_flops: float | None = None
        self._last: float | None = None

    def start(self, device, precision) -> None:
        if self.peak_tflops:
            self.peak_flops = self.peak_tflops * 1e12
        elif device.type == "cuda":
            self.peak_flops = get_available_flops(device, precision)

    def tick(self, tokens: int) -> dict[str, float]:
        """Call at each batch start with the tokens of a batch over all devices: {tokens_per_s, mfu} since the
        last call (empty on the first). MFU is per device: pass ``world_size`` to :meth:`mfu`."""
        now, last = time.perf_counter(), self._last
        self._last = now
        return {} if last is None else {"tokens_per_s": tokens / (now - last)}

    def mfu(self, tokens_per_s_per_device: float) -> float | None:
        return tokens_per_s_per_device * self.flops_per_token / self.peak_flops if self.peak_flops else None
