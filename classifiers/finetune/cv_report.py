"""What `finetune-cv` measured: the head alone and the fine-tuned network on the same folds."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from classifiers.bench.stats import Summary, TTest, corrected_resampled_ttest, summarize
from classifiers.model_file import jsonable

#: The metrics summarised over folds, and the bounds their intervals are clipped to.
METRICS = {"accuracy": (0.0, 1.0), "log_loss": (0.0, None)}
#: Each fine-tuned row and the head row it is compared with, fold by fold.
PAIRS = (("finetuned", "head"), ("finetuned+tta-views", "head+tta-views"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneCVReport:
    """The folds' results (`classifiers.finetune.cv`) and their summaries.

    Each fold scores rows named "head" and "finetuned", and on a store with augmented views
    "head+tta-views" and "finetuned+tta-views" (probabilities averaged over the image and its
    views, as `bench --tta views`)."""

    store: str
    settings: dict[str, Any]
    images: int  # train+validation images the folds split
    cached_views: list[str]  # the stored maps training drew from besides each image's own
    folds: list[dict[str, Any]]
    seconds: float

    @property
    def rows(self) -> list[str]:
        return list(self.folds[0]["scores"]) if self.folds else []

    def _sizes(self) -> tuple[float, float]:
        """Mean (training, held-out) images per fold: the t-statistics' correction needs them."""
        scored = float(np.mean([fold["images"]["scored"] for fold in self.folds]))
        return self.images - scored, scored

    def summary_of(self, row: str, metric: str) -> Summary:
        """`row`'s `metric` over the folds, with its corrected 95% interval."""
        values = [fold["scores"][row].get(metric) for fold in self.folds]
        return summarize(values, *self._sizes(), bounds=METRICS[metric])

    def differences(self, metric: str = "accuracy") -> dict[str, TTest]:
        """Each fine-tuned row minus its head row, paired by fold (none with a single fold)."""
        if len(self.folds) < 2:
            return {}
        tests = {}
        for tuned, head in PAIRS:
            if tuned in self.rows:
                a, b = ([fold["scores"][row][metric] for fold in self.folds] for row in (tuned, head))
                tests[f"{tuned} - {head}"] = corrected_resampled_ttest(a, b, *self._sizes())
        return tests

    def to_dict(self, predictions: bool = True) -> dict[str, Any]:
        """Everything; without `predictions`, the folds' out-of-fold probabilities are left out
        (they are most of the bytes: the fold files keep them)."""
        summaries = {row: {m: self.summary_of(row, m).to_dict() for m in METRICS} for row in self.rows}
        tests = {name: dataclasses.asdict(test) for name, test in self.differences().items()}
        folds = [f if predictions else {k: v for k, v in f.items() if k != "predictions"} for f in self.folds]
        data = {**dataclasses.asdict(self), "folds": folds}
        return jsonable({**data, "summary": summaries, "differences": tests})

    def summary(self) -> str:
        s = self.settings
        drawn = f", drawing among {' + '.join(self.cached_views)}" if self.cached_views else ""
        from_images = s.get("from_cache") is False  # named only off the default (FinetuneCVConfig.params)
        tuned = "block4+block5" if s.get("unfreeze") == "block4" else "block5"
        augment = " with random augmentation" if s["augment"] else ""
        inputs = f"images{augment}" if from_images else f"cached block4_pool maps{drawn}"
        lines = [
            f"fine-tune CV on {self.store}: {len(self.folds)} folds (seed {s['seed']}) of "
            f"{self.images} train+validation images; {s['head']} head, then {tuned}+head from "
            f"{inputs}; {self.seconds:.0f} s",
            f"{'':21}{'accuracy':>9}  {'95% CI':<16}{'log loss':>9}",
        ]
        for row in self.rows:
            acc, loss = self.summary_of(row, "accuracy"), self.summary_of(row, "log_loss")
            interval = f"[{acc.low:.3f}, {acc.high:.3f}]" if acc.low is not None else "-"
            lines.append(f"{row:<21}{acc.mean:>9.4f}  {interval:<16}{loss.mean:>9.4f}")
        for name, test in self.differences().items():
            lines.append(
                f"{name}: {test.mean_difference:+.4f} accuracy, p = {test.p_value:.3g} "
                "(corrected resampled t-test)"
            )
        return "\n".join(lines)
