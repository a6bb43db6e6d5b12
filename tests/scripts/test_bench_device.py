"""scripts/bench_device.py's CPU dry run: small N, tiny inputs, the TensorFlow backend (the GPU
machine runs it on JAX); it must finish and print the three rates and the wall."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_device_dry_run_prints_the_three_rates(tmp_path: Path) -> None:
    env = {**os.environ, "FEATURESTORE_PHOTOS": str(tmp_path / "no-photos"), "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, str(REPO / "scripts" / "bench_device.py"), "--n", "24", "--size", "32"]
    command += ["--batch-size", "8", "--workers", "2", "--backend", "tensorflow", "--precision", "float32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "24 JPEGs from synthetic images" in out
    assert "backend tensorflow on cpu; precision float32" in out
    rates = {
        key: float(value)
        for key, value in re.findall(r"^\((d|m|e)\) [^\n]*?([\d.]+) images/s$", out, flags=re.MULTILINE)
    }
    assert set(rates) == {"d", "m", "e"} and all(rate > 0 for rate in rates.values()), out
    assert re.search(r"the wall: (decode|model)", out)
