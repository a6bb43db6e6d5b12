"""The Keras heads as scikit-learn classifiers, beyond the generic estimator checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.keras_heads import DenseHead, GapHead
from tests.classifiers.conftest import FAST_HEAD, make_maps


@pytest.mark.parametrize("head_class", [DenseHead, GapHead])
def test_fits_4d_maps_and_predicts_probabilities(head_class) -> None:
    X, y = make_maps(60)
    head = head_class(**FAST_HEAD, random_state=0).fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(head.predict(X)) <= {0, 1}
    assert head.input_shape_ == (2, 2, 8)
    assert head.n_epochs_ == FAST_HEAD["epochs"]
    assert head.best_epoch_ is None  # no validation set, so no early stopping


@pytest.mark.parametrize("head_class", [DenseHead, GapHead])
def test_a_rows_probabilities_do_not_depend_on_what_shares_its_batch(head_class) -> None:
    # oneDNN picks matmul kernels by batch shape, and on an AVX-512 CPU they round a row
    # differently (1e-7) by batch size and position; predict runs fixed-size padded passes.
    from classifiers._keras_models import PREDICT_BATCH

    X, y = make_maps(60)
    head = head_class(**FAST_HEAD, random_state=0).fit(X, y)
    together = head.predict_proba(X)
    alone = np.concatenate([head.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(alone, together)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(head.predict_proba(X[order]), together[order])
    # more rows than one pass: every row lands at other positions, some in the second pass
    picks = np.random.default_rng(1).integers(0, len(X), size=PREDICT_BATCH + 44)
    np.testing.assert_array_equal(head.predict_proba(X[picks]), together[picks])


def test_binary_head_is_one_sigmoid_unit_and_multiclass_is_softmax() -> None:
    X2, y2 = make_maps(30, n_classes=2)
    X3, y3 = make_maps(30, n_classes=3)
    binary = DenseHead(**FAST_HEAD, random_state=0).fit(X2, y2)
    multi = DenseHead(**FAST_HEAD, random_state=0).fit(X3, y3)
    assert binary.model_.output_shape == (None, 1)
    assert binary.model_.layers[-1].activation.__name__ == "sigmoid"
    assert multi.model_.output_shape == (None, 3)
    assert multi.model_.layers[-1].activation.__name__ == "softmax"
    assert multi.predict_proba(X3).shape == (30, 3)


def test_default_dense_head_is_the_classic_architecture_on_unit_rows() -> None:
    head = DenseHead()
    assert (head.hidden, head.dropout, head.learning_rate) == (256, 0.5, 2e-5)
    assert (head.epochs, head.batch_size, head.input_norm) == (30, 20, 10.0)
    X, y = make_maps(20, shape=(4, 4, 512))
    model = DenseHead(epochs=1, random_state=0).fit(X, y).model_
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Flatten", "UnitNormalization", "Rescaling", "Dense", "Dropout", "Dense"]
    assert model.get_layer("hidden").units == 256
    assert model.optimizer.__class__.__name__ == "RMSprop"
    rows = keras_rows(model, X)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 10.0, rtol=1e-5)
    classic = DenseHead(input_norm=None, epochs=1).fit(X, y).model_
    assert [type(layer).__name__ for layer in classic.layers] == [
        "InputLayer",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]


def keras_rows(model, X: np.ndarray) -> np.ndarray:
    """What the first Dense layer of `model` receives for `X`."""
    import keras

    return np.asarray(keras.Model(model.input, model.get_layer("row_norm").output)(X))


def test_early_stopping_restores_the_best_epoch() -> None:
    X, y = make_maps(80, seed=3)
    X_val, y_val = make_maps(40, seed=4)
    y_val = 1 - y_val  # a validation set that disagrees: its loss rises, training stops early
    head = DenseHead(hidden=8, epochs=40, batch_size=16, learning_rate=0.01, patience=2, random_state=0).fit(
        X, y, validation_data=(X_val, y_val)
    )
    assert head.n_epochs_ < 40
    assert head.n_epochs_ == head.best_epoch_ + 2
    val_loss = head.history_["val_loss"]
    assert head.best_epoch_ == int(np.argmin(val_loss)) + 1
    # the restored weights are the best epoch's: recompute its validation loss
    p = np.clip(head.predict_proba(X_val)[np.arange(40), y_val], 1e-7, 1)
    assert -np.log(p).mean() == pytest.approx(min(val_loss), rel=1e-5)


def test_validation_fraction_holds_out_rows_for_early_stopping() -> None:
    X, y = make_maps(50)
    head = DenseHead(**FAST_HEAD, validation_fraction=0.2, random_state=0).fit(X, y)
    assert len(head.history_["val_loss"]) == head.n_epochs_
    assert head.best_epoch_ is not None


def test_same_random_state_same_model_and_global_rng_untouched() -> None:
    X, y = make_maps(40)
    np.random.seed(123)
    expected_draw = np.random.random()
    np.random.seed(123)
    first = DenseHead(**FAST_HEAD, random_state=7).fit(X, y).predict_proba(X)
    assert np.random.random() == expected_draw
    second = DenseHead(**FAST_HEAD, random_state=7).fit(X, y).predict_proba(X)
    other = DenseHead(**FAST_HEAD, random_state=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_clone_keeps_every_parameter_and_fit_mutates_nothing() -> None:
    head = GapHead(
        hidden=4,
        dropout=0.1,
        learning_rate=0.02,
        epochs=2,
        batch_size=8,
        validation_fraction=0.25,
        early_stopping=False,
        patience=3,
        random_state=5,
        verbose=0,
    )
    assert clone(head).get_params() == head.get_params()
    X, y = make_maps(24)
    X_before, y_before, params = X.copy(), y.copy(), head.get_params()
    head.fit(X, y)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    assert head.get_params() == params


def test_string_labels_and_validation_labels_must_be_known() -> None:
    X, y = make_maps(30)
    names = np.array(["cat", "dog"])[y]
    head = DenseHead(**FAST_HEAD, random_state=0).fit(X, names)
    assert set(head.predict(X)) <= {"cat", "dog"}
    with pytest.raises(ValueError, match=r"validation_data has labels not seen in y: \['fox'\]"):
        DenseHead(**FAST_HEAD).fit(X, names, validation_data=(X[:2], np.array(["cat", "fox"])))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden": -1}, "parameter hidden must be an integer >= 0"),
        ({"dropout": 1.0}, "parameter dropout must be a number >= 0.0 and < 1.0"),
        ({"learning_rate": 0}, "parameter learning_rate must be a number > 0"),
        ({"epochs": 2.5}, "parameter epochs must be an integer >= 1"),
        ({"validation_fraction": 1.0}, "parameter validation_fraction must be a number > 0.0 and < 1"),
        ({"early_stopping": "yes"}, "parameter early_stopping must be true or false"),
    ],
)
def test_bad_parameters_fail_in_fit_naming_the_parameter(params: dict, message: str) -> None:
    X, y = make_maps(10)
    head = DenseHead(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=message):
        head.fit(X, y)


def test_predict_refuses_maps_of_another_shape() -> None:
    X, y = make_maps(20)
    head = DenseHead(**FAST_HEAD).fit(X, y)
    with pytest.raises(ValueError, match=r"per-sample shape \(2, 4, 4\)"):
        head.predict(np.zeros((1, 2, 4, 4), np.float32))


def test_importing_classifiers_does_not_import_tensorflow() -> None:
    code = (
        "import sys, classifiers, classifiers.registry, classifiers.model_file, "
        "classifiers.training, classifiers.prediction\n"
        "from classifiers import DenseHead, make_classifier\n"
        "make_classifier('dense'); make_classifier('logreg')\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
