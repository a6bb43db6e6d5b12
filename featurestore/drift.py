"""Drift: do tonight's images look like the store's earlier ones?

Compared on the pooled maps (512 numbers an image: the maps' average over positions), overall
and within each class, by two tests on the same rows:

- a domain classifier: logistic regression trying to tell tonight's rows from earlier ones,
  scored by its cross-validated ROC AUC (stratified folds, seeded). 0.5: it cannot; 1.0: tonight
  is a different world. The AUC is the effect size the threshold (`--fail-on-drift`) reads.
- a kernel two-sample test (MMD with a Gaussian kernel, bandwidth from the median distance) on
  a 64-component PCA projection of the same rows, with a permutation p-value. It keeps small
  nights honest: ten images can reach a high AUC by luck, not a small p-value.

A comparison is drifted when its AUC reaches the threshold AND its p-value is below alpha
(Bonferroni-divided over the comparisons made, so that more classes do not mean more false
alarms). Both sides are subsampled to `cap` rows (seeded), so a comparison costs seconds
whatever the store's size. Class balance (total variation distance and a chi-square test) and
the failure rate (Fisher's exact test) are reported beside it; they do not set `drifted`.

Threshold and alpha were chosen by measurement on real photos (scripts/bench_drift.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

#: AUC at or above which a night counts as drifted (with p < alpha). Measured with
#: scripts/bench_drift.py on real photos: no false alarm in 400 same-distribution nights of 10 to
#: 200 images at any threshold from 0.6 (the p-value guards small nights); at 0.7, grayscale,
#: rotated and other-class nights of 20+ images are all flagged, and darkened or blurred ones
#: from 50 images on (88% of blurred, 88% of darkened nights of 20).
DEFAULT_THRESHOLD = 0.7
#: Familywise significance level of the permutation tests.
DEFAULT_ALPHA = 0.01
#: Rows kept on each side (earlier, tonight); more costs time and buys little.
DEFAULT_CAP = 2000
#: Rows needed on each side for a comparison.
MIN_ROWS = 10
PCA_COMPONENTS = 64  # of the kernel test's projection
BANDWIDTH_SCALE = 0.5  # kernel exp(-d^2 / (scale * median d^2)): sharper than the median
DOMAIN_C = 0.01  # the domain classifier's regularisation: strong, 512 columns and few rows tonight
MMD_CAP = 500  # rows per side in the kernel test: its cost grows with the square
EARLIER_PER_TONIGHT = 4  # earlier rows the domain classifier sees per tonight row (at least MMD_CAP)
MIN_PERMUTATIONS = 200
FOLDS = 5
POOLS = ("avg", "max")


def pool_maps(maps: np.ndarray, how: str = "avg") -> np.ndarray:
    """(n, H, W, C) maps -> (n, C) by average or max over positions."""
    if how not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, not {how!r}")
    maps = np.asarray(maps, dtype=np.float32)
    return maps.mean(axis=(1, 2)) if how == "avg" else maps.max(axis=(1, 2))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Comparison:
    """One test of tonight against earlier: overall ("all") or within one class."""

    scope: str
    n_earlier: int
    n_tonight: int
    auc: float | None
    p_value: float | None
    alpha: float
    drifted: bool
    note: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassBalance:
    """Class shares earlier and tonight; total variation distance (0: same, 1: disjoint)."""

    earlier: dict[str, float]
    tonight: dict[str, float]
    total_variation: float
    p_value: float | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailureRate:
    """Share of attempted images that failed, earlier runs and tonight."""

    earlier: float | None
    tonight: float | None
    change: float | None
    p_value: float | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftReport:
    """The result of `compare`: small, JSON-able (`to_dict`), for the run record."""

    threshold: float
    alpha: float
    pool: str
    overall: Comparison
    per_class: tuple[Comparison, ...]
    class_balance: ClassBalance | None
    failure_rate: FailureRate | None
    drifted: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line for a log: overall AUC and p, the drifted classes."""

        def fmt(c: Comparison) -> str:
            if c.auc is None:
                return f"{c.scope}: n/a ({c.note})"
            return f"{c.scope}: AUC {c.auc:.3f}, p {c.p_value:.3g}"

        verdict = "DRIFT" if self.drifted else "no drift"
        parts = [fmt(self.overall), *(fmt(c) for c in self.per_class)]
        return f"drift (threshold AUC {self.threshold:g}): {verdict}; " + "; ".join(parts)


# -- the two tests ---------------------------------------------------------------------------
def standardize(rows: np.ndarray) -> np.ndarray:
    """Square-rooted (pooled ReLU maps are skewed), centred, unit-variance columns. Computed
    on all rows alike, never on which side they are from, so the permutation test stays exact."""
    x = np.sqrt(np.maximum(rows, 0, dtype=np.float64))
    x -= x.mean(axis=0)
    scale = x.std(axis=0)
    return x / np.where(scale > 0, scale, 1.0)


def project(x: np.ndarray, components: int = PCA_COMPONENTS) -> np.ndarray:
    """The first principal components of standardized rows, each scaled to unit variance."""
    from sklearn.decomposition import PCA

    k = max(1, min(components, x.shape[0] - 1, x.shape[1]))
    z = PCA(n_components=k, svd_solver="covariance_eigh").fit_transform(x)
    return z / np.maximum(z.std(axis=0), 1e-12)


def domain_auc(x: np.ndarray, is_tonight: np.ndarray, *, seed: int = 0, folds: int = FOLDS) -> float:
    """Mean ROC AUC over stratified folds of a classifier telling tonight's rows from earlier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    folds = min(folds, int(is_tonight.sum()), int((~is_tonight).sum()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x, is_tonight):
        model = LogisticRegression(C=DOMAIN_C, class_weight="balanced", max_iter=1000)
        model.fit(x[train], is_tonight[train])
        scores.append(roc_auc_score(is_tonight[test], model.decision_function(x[test])))
    return float(np.mean(scores))


def mmd_p_value(
    x: np.ndarray,
    is_tonight: np.ndarray,
    *,
    permutations: int = MIN_PERMUTATIONS,
    seed: int = 0,
    scale: float = BANDWIDTH_SCALE,
) -> float:
    """Permutation p-value of the (biased) squared MMD between the two sides, Gaussian kernel
    exp(-d^2 / (scale * median d^2)). The permutations go through one matrix product."""
    rng = np.random.default_rng(seed)
    sq = np.sum(x**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    upper = d2[np.triu_indices(len(x), k=1)]
    bandwidth = scale * float(np.median(upper)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    n1 = int(is_tonight.sum())
    n0 = len(x) - n1
    weights = np.where(is_tonight, 1.0 / n1, -1.0 / n0)
    observed = float(weights @ kernel @ weights)
    beats = 0
    done = 0
    while done < permutations:
        batch = min(256, permutations - done)
        shuffled = np.stack([rng.permutation(weights) for _ in range(batch)], axis=1)
        null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
        beats += int(np.sum(null >= observed - 1e-12))
        done += batch
    return (1 + beats) / (1 + permutations)


def compare_rows(
    earlier: np.ndarray,
    tonight: np.ndarray,
    *,
    scope: str = "all",
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Comparison:
    """Both tests on two sets of pooled rows (already capped)."""
    n0, n1 = len(earlier), len(tonight)
    if min(n0, n1) < MIN_ROWS:
        note = f"too few rows (earlier {n0}, tonight {n1}; need {MIN_ROWS} each)"
        return Comparison(
            scope=scope,
            n_earlier=n0,
            n_tonight=n1,
            auc=None,
            p_value=None,
            alpha=alpha,
            drifted=False,
            note=note,
        )
    rows = np.concatenate([earlier, tonight]).astype(np.float64)
    is_tonight = np.r_[np.zeros(n0, bool), np.ones(n1, bool)]
    x = standardize(rows)
    rng = np.random.default_rng(seed)
    # The classifier learns from at most EARLIER_PER_TONIGHT earlier rows per tonight row: a
    # small night gains little from thousands of earlier rows, and its fits stay fast.
    fit = np.r_[rng.permutation(n0)[: max(EARLIER_PER_TONIGHT * n1, MMD_CAP)], n0 + np.arange(n1)]
    auc = domain_auc(x[fit], is_tonight[fit], seed=seed)
    # The kernel test on at most MMD_CAP rows a side (its cost grows with the square).
    keep = np.concatenate(
        [
            rng.permutation(n0)[:MMD_CAP],
            n0 + rng.permutation(n1)[:MMD_CAP],
        ]
    )
    permutations = max(MIN_PERMUTATIONS, math.ceil(4 / alpha))  # p can fall well below alpha
    p = mmd_p_value(project(x)[keep], is_tonight[keep], permutations=permutations, seed=seed)
    return Comparison(
        scope=scope,
        n_earlier=n0,
        n_tonight=n1,
        auc=auc,
        p_value=p,
        alpha=alpha,
        drifted=bool(auc >= threshold and p < alpha),
    )


# -- the whole comparison -----------------------------------------------------------------------
def _cap(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(n)[:cap]) if n > cap else np.arange(n)


def class_balance(
    earlier_labels: np.ndarray, tonight_labels: np.ndarray, class_names: Sequence[str]
) -> ClassBalance | None:
    """Class shares on each side (labels index class_names; -1 is unlabeled and left out)."""
    from scipy.stats import chi2_contingency

    k = len(class_names)
    a = np.bincount(earlier_labels[earlier_labels >= 0], minlength=k)[:k]
    b = np.bincount(tonight_labels[tonight_labels >= 0], minlength=k)[:k]
    if a.sum() == 0 or b.sum() == 0:
        return None
    pa, pb = a / a.sum(), b / b.sum()
    seen = (a + b) > 0
    p_value = None
    if seen.sum() >= 2:
        p_value = float(chi2_contingency(np.stack([a[seen], b[seen]])).pvalue)
    return ClassBalance(
        earlier={name: float(v) for name, v in zip(class_names, pa, strict=True)},
        tonight={name: float(v) for name, v in zip(class_names, pb, strict=True)},
        total_variation=float(0.5 * np.abs(pa - pb).sum()),
        p_value=p_value,
    )


def failure_rate(
    tonight_failed: int, tonight_attempted: int, earlier_failed: int, earlier_attempted: int
) -> FailureRate:
    """Failure rates (failed / attempted) and Fisher's exact test of their difference."""
    from scipy.stats import fisher_exact

    def rate(failed: int, attempted: int) -> float | None:
        return failed / max(attempted, failed) if max(attempted, failed) else None

    tonight, earlier = rate(tonight_failed, tonight_attempted), rate(earlier_failed, earlier_attempted)
    p_value = None
    if tonight is not None and earlier is not None:
        table = [
            [tonight_failed, max(tonight_attempted - tonight_failed, 0)],
            [earlier_failed, max(earlier_attempted - earlier_failed, 0)],
        ]
        p_value = float(fisher_exact(table).pvalue)
    change = tonight - earlier if tonight is not None and earlier is not None else None
    return FailureRate(earlier=earlier, tonight=tonight, change=change, p_value=p_value)


def compare(
    earlier: np.ndarray,
    earlier_labels: np.ndarray,
    tonight: np.ndarray,
    tonight_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    cap: int = DEFAULT_CAP,
    seed: int = 0,
    pool: str = "avg",
    failures: FailureRate | None = None,
) -> DriftReport:
    """Compare pooled rows of tonight with earlier ones, overall and per class (see module doc).

    `earlier`/`tonight` are (n, C) pooled features; labels index `class_names` (-1: unlabeled).
    Class balance uses every row; the tests use at most `cap` rows a side.
    """
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"threshold must be an AUC between 0.5 and 1, got {threshold}")
    # One BLAS thread: these matrices are small, and a busy machine (the model running beside
    # us) turns BLAS threads spinning for cores into seconds of waiting.
    with threadpool_limits(limits=1):
        return _compare(
            earlier,
            earlier_labels,
            tonight,
            tonight_labels,
            class_names,
            threshold,
            alpha,
            cap,
            seed,
            pool,
            failures,
            started,
        )


def _compare(
    earlier: np.ndarray,
    earlier_labels: np.ndarray,
    tonight: np.ndarray,
    tonight_labels: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    alpha: float,
    cap: int,
    seed: int,
    pool: str,
    failures: FailureRate | None,
    started: float,
) -> DriftReport:
    earlier_labels = np.asarray(earlier_labels)
    tonight_labels = np.asarray(tonight_labels)
    balance = class_balance(earlier_labels, tonight_labels, class_names)
    rng = np.random.default_rng(seed)
    keep0, keep1 = _cap(len(earlier), cap, rng), _cap(len(tonight), cap, rng)
    e, el = np.asarray(earlier)[keep0], earlier_labels[keep0]
    t, tl = np.asarray(tonight)[keep1], tonight_labels[keep1]
    testable = [
        c for c in range(len(class_names)) if min(int((el == c).sum()), int((tl == c).sum())) >= MIN_ROWS
    ]
    each = alpha / (1 + len(testable))  # Bonferroni over the overall and per-class tests
    overall = compare_rows(e, t, scope="all", threshold=threshold, alpha=each, seed=seed)
    per_class = tuple(
        compare_rows(e[el == c], t[tl == c], scope=class_names[c], threshold=threshold, alpha=each, seed=seed)
        for c in testable
    )
    return DriftReport(
        threshold=threshold,
        alpha=alpha,
        pool=pool,
        overall=overall,
        per_class=per_class,
        class_balance=balance,
        failure_rate=failures,
        drifted=overall.drifted or any(c.drifted for c in per_class),
        seconds=time.perf_counter() - started,
    )
