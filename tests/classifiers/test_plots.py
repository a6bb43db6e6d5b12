"""PNG plots, drawn without pyplot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from classifiers.plots import plot_confusion_matrix, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def test_training_curves_and_confusion_matrix_are_pngs(tmp_path: Path) -> None:
    history = {
        "loss": [0.7, 0.5, 0.4],
        "accuracy": [0.5, 0.7, 0.8],
        "val_loss": [0.6, 0.5, 0.55],
        "val_accuracy": [0.6, 0.7, 0.65],
    }
    curves = plot_training_curves(history, tmp_path / "curves.png", best_epoch=2)
    matrix = plot_confusion_matrix([[5, 1], [0, 6]], ["cats", "dogs"], tmp_path / "cm.png")
    for path in (curves, matrix):
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_plotting_never_imports_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys; from classifiers.plots import plot_confusion_matrix\n"
        f"plot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'], {str(tmp_path / 'cm.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "cm.png").exists()
