"""Ensembles of the registry's best scikit-learn classifiers: `stack` and `vote`.

Both combine three models that each ranked at the top of the cats-vs-dogs leaderboard while
reading the maps differently, so that their mistakes differ:

- ``logreg``: logistic regression on max-pooled maps ("is this pattern anywhere");
- ``rbf-svm``: an RBF-kernel SVM on the same pooled maps, calibrated (a non-linear boundary);
- ``logreg-flat``: logistic regression on the flattened maps (where in the frame, 16x wider).

``stack`` is scikit-learn's `StackingClassifier`: a logistic regression learns how much to
trust each model from their out-of-fold probabilities (5 inner folds), then the models are
refitted on all the rows. ``vote`` is a `VotingClassifier` with soft voting: the mean of the
three calibrated probabilities, no inner folds, so it costs one fit of each. Keras heads are
left out: a Keras network cannot live inside a skops file, and training one per inner fold
would multiply a stack's cost by the folds.

`features` (the registry's ``--features``) makes every member read the same transform;
None keeps each member's own.
"""

from __future__ import annotations

from collections.abc import Callable

from sklearn.base import BaseEstimator
from sklearn.ensemble import StackingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from classifiers.pipelines import logreg, rbf_svm

#: Inner folds of `stack` for the out-of-fold probabilities its final model learns from.
STACK_FOLDS = 5


def members(features: str | None) -> list[tuple[str, Pipeline]]:
    """The (name, pipeline) pairs both ensembles combine."""
    return [
        ("logreg", logreg(features or "max")),
        ("rbf-svm", rbf_svm(features or "max")),
        ("logreg-flat", logreg(features or "flatten")),
    ]


def stack(features: str | None) -> StackingClassifier:
    """Stacked generalisation: a logistic regression on the members' out-of-fold probabilities."""
    return StackingClassifier(
        estimators=members(features),
        final_estimator=LogisticRegression(C=1.0, max_iter=1000),
        cv=STACK_FOLDS,
        stack_method="predict_proba",
    )


def vote(features: str | None) -> VotingClassifier:
    """Soft voting: the mean of the members' calibrated probabilities."""
    return VotingClassifier(estimators=members(features), voting="soft")


#: name -> (builder, default feature mode: None, each member reads its own)
ENSEMBLES: dict[str, tuple[Callable[[str | None], BaseEstimator], str | None]] = {
    "stack": (stack, None),
    "vote": (vote, None),
}
