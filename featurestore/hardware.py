"""What this machine computes natively, detected rather than guessed.

- bfloat16: a GPU, or a CPU whose /proc/cpuinfo flags include avx512_bf16 or amx_bf16
  (oneDNN then runs bf16 convolutions natively; elsewhere Keras emulates them, slower than
  float32). ``FEATURESTORE_NATIVE_BF16=0|1`` overrides the detection (a VM that hides flags).
- the compute record: the Keras backend and the device kind (cpu or gpu) that compute maps.

Importing this module imports nothing heavy; `device_kind` imports the Keras backend.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from pathlib import Path

__all__ = [
    "BF16_CPU_FLAGS",
    "NATIVE_BF16_ENV",
    "auto_precision",
    "compute_record",
    "cpu_flags",
    "cpu_model",
    "default_workers",
    "device_kind",
    "native_bf16",
    "native_precision",
]

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
NATIVE_BF16_ENV = "FEATURESTORE_NATIVE_BF16"
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str, cpuinfo: Path) -> str:
    """The first value of a /proc/cpuinfo field ("" where there is no such file or field)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty off Linux)."""
    return frozenset(_cpuinfo_field("flags", cpuinfo).split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's "model name" (for benchmark headers)."""
    return _cpuinfo_field("model name", cpuinfo) or "unknown CPU"


def default_workers() -> int:
    """Decode workers sized from the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: Device nodes of the GPUs a Keras backend can use here: NVIDIA (CUDA), AMD (ROCm), WSL.
GPU_DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def gpu_possible(nodes: tuple[str, ...] = GPU_DEVICE_NODES) -> bool:
    """False when no GPU device node exists (Linux): `device_kind` would then say "cpu", and
    asking it costs the backend's import (seconds and hundreds of MB). True where unsure."""
    if not sys.platform.startswith("linux"):
        return True  # macOS' Metal and others show no device node
    return any(glob.glob(pattern) for pattern in nodes)


@functools.cache
def device_kind() -> str:
    """ "gpu" when the Keras backend sees a GPU, else "cpu" (imports the backend)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = any(device.platform == "gpu" for device in jax.devices())
    elif backend == "torch":
        import torch

        found = bool(torch.cuda.is_available())
    elif backend == "tensorflow":
        import tensorflow as tf  # the one backend probe; model code stays backend-neutral

        from featurestore.quiet import filtered_native_stderr

        with filtered_native_stderr():
            found = bool(tf.config.list_physical_devices("GPU"))
    else:
        found = False
    return "gpu" if found else "cpu"


def native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether bfloat16 runs natively here: the override, else the CPU flags, else a GPU."""
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return bool(cpu_flags(cpuinfo) & set(BF16_CPU_FLAGS)) or device_kind() == "gpu"


def native_precision(precision: str) -> bool:
    """Whether a Keras dtype policy runs natively here (float32 always does)."""
    if precision == "float32":
        return True
    if precision == "mixed_bfloat16":
        return native_bf16()
    return device_kind() == "gpu"  # mixed_float16: tensor cores; CPUs emulate it


def auto_precision() -> str:
    """`--precision auto`: mixed_bfloat16 where it runs natively, float32 elsewhere."""
    return "mixed_bfloat16" if native_bf16() else "float32"


def compute_record() -> dict[str, str]:
    """What computes the maps, recorded with a store's fingerprint: backend and device kind."""
    import keras

    return {"keras_backend": keras.backend.backend(), "device": device_kind()}
