"""scikit-learn's linear models are predicted from their coefficients (issue 15, cheaper predict),
with exactly scikit-learn's answers, and everything else keeps scikit-learn's own path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.runtime.builtin import sklearn_linear
from kserve_mesh.runtime.builtin.loaders import SklearnModel
from kserve_mesh.runtime.builtin.prediction import predict
from kserve_mesh.runtime.builtin.sklearn_linear import linear_predict

X, Y = load_iris(return_X_y=True)
XD, YD = load_diabetes(return_X_y=True)
NAMES = np.array(["setosa", "versicolor", "virginica"])


def _fitted() -> dict[str, tuple[Any, np.ndarray]]:
    binary = Y > 0
    return {
        "logistic, 3 classes": (LogisticRegression(max_iter=1000).fit(X, Y), X),
        "logistic, binary": (LogisticRegression(max_iter=1000).fit(X, binary), X),
        "logistic, string classes": (LogisticRegression(max_iter=1000).fit(X, NAMES[Y]), X),
        "sgd classifier": (SGDClassifier(random_state=0).fit(X, Y), X),
        "linear svc": (LinearSVC(random_state=0).fit(X, binary), X),
        "perceptron": (Perceptron(random_state=0).fit(X, Y), X),
        "linear regression": (LinearRegression().fit(XD, YD), XD),
        "linear regression, 2 targets": (LinearRegression().fit(XD, np.c_[YD, -YD]), XD),
        "ridge, no intercept": (Ridge(fit_intercept=False).fit(XD, YD), XD),
        "lasso": (Lasso(alpha=0.1).fit(XD, YD), XD),
        "elastic net": (ElasticNet(alpha=0.01).fit(XD, YD), XD),
        "sgd regressor": (SGDRegressor(random_state=0, max_iter=20, tol=None).fit(XD, YD), XD),
        "scaled logistic (a pipeline)": (
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, Y),
            X,
        ),
        "two scalers, passthrough, ridge": (
            Pipeline(
                [
                    ("a", StandardScaler(with_mean=False)),
                    ("skip", "passthrough"),
                    ("b", StandardScaler(with_std=False)),
                    ("ridge", Ridge()),
                ]
            ).fit(XD, YD),
            XD,
        ),
    }


FITTED = _fitted()


def _boom(*_: Any, **__: Any) -> Any:
    raise AssertionError("scikit-learn's predict was called")


@pytest.mark.parametrize("name", list(FITTED))
def test_linear_models_answer_exactly_as_sklearn_without_calling_it(name: str) -> None:
    estimator, data = FITTED[name]
    rows = np.vstack([data, np.random.default_rng(3).standard_normal((50, data.shape[1])) * 5])
    slices = ((0, None), (5, 6), (7, 9))
    expected = [estimator.predict(rows[i:j]) for i, j in slices]  # one row may round differently from many
    model = SklearnModel(estimator)
    assert model._linear is not None, f"{name} was not given the linear path"
    estimator.predict = _boom  # the instance attribute hides the method: the hot path must not call it
    try:
        answers = [predict(name, model, {"input-0": rows[i:j]})["output-0"] for i, j in slices]
    finally:
        del estimator.predict
    for want, got in zip(expected, answers):
        if want.dtype.kind == "U":  # string classes travel as BYTES
            assert [v.decode() for v in got.ravel()] == want.tolist()
        else:
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


class _Shifted(LogisticRegression):
    def predict(self, X: Any) -> Any:
        return super().predict(X)[::-1].copy()


class _OwnScores(Ridge):
    def _decision_function(self, X: Any) -> Any:
        return super()._decision_function(X) * 2


def test_what_is_not_plainly_linear_keeps_sklearns_path() -> None:
    sparse = LogisticRegression(max_iter=1000).fit(X, Y)
    sparse.sparsify()
    others = {
        "a subclass with its own predict": _Shifted(max_iter=1000).fit(X, Y),
        "a subclass with its own scores": _OwnScores().fit(XD, YD),
        "sparsified coefficients": sparse,
        "RidgeClassifier (its own predict, for multilabel)": RidgeClassifier().fit(X, Y),
        "a tree": DecisionTreeClassifier(random_state=0).fit(X, Y),
        "a pipeline with another transformer": make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=1000)).fit(
            X, Y
        ),
        "a pipeline ending in a tree": make_pipeline(StandardScaler(), DecisionTreeClassifier(random_state=0)).fit(
            X, Y
        ),
    }
    for name, estimator in others.items():
        assert linear_predict(estimator) is None, name
        data = XD if isinstance(estimator, Ridge) else X
        got = predict(name, SklearnModel(estimator), {"input-0": data[:30]})["output-0"]
        assert np.array_equal(got, estimator.predict(data[:30])), name


def test_a_function_that_disagrees_with_sklearn_on_the_probe_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    estimator = LogisticRegression(max_iter=1000).fit(X, Y)
    assert linear_predict(estimator) is not None
    monkeypatch.setattr(sklearn_linear, "_classifier", lambda est: lambda x: np.zeros(len(x), dtype=np.int64))
    assert linear_predict(estimator) is None  # always class 0: caught by the probe rows
    monkeypatch.setattr(sklearn_linear, "_classifier", lambda est: lambda x: est.classes_.take(np.zeros(len(x), int)))
    assert linear_predict(estimator) is None
    model = SklearnModel(estimator)
    assert model._linear is None
    assert np.array_equal(predict("iris", model, {"input-0": X})["output-0"], estimator.predict(X))


def test_nan_and_other_dtypes_still_go_through_sklearn() -> None:
    estimator = LogisticRegression(max_iter=1000).fit(X, Y)
    model = SklearnModel(estimator)
    assert model._linear is not None
    rows = X[:3].copy()
    rows[1, 2] = np.inf
    with pytest.raises(InvalidArgument, match="infinity"):
        predict("iris", model, {"input-0": rows})
    f32 = X[:10].astype(np.float32)
    expected = estimator.predict(f32)
    seen: list[np.dtype] = []
    real = estimator.predict
    estimator.predict = lambda x: seen.append(x.dtype) or real(x)  # type: ignore[method-assign]
    try:
        assert np.array_equal(model.predict({"input-0": f32})["output-0"], expected)
    finally:
        del estimator.predict
    assert seen == [np.dtype(np.float32)]  # scikit-learn's own predict answered it


def test_a_very_wide_model_is_probed_within_a_few_mib() -> None:
    import tracemalloc

    wide = LogisticRegression()  # a fitted binary model of 200,000 features, set directly
    wide.coef_ = np.random.default_rng(1).standard_normal((1, 200_000))
    wide.intercept_ = np.array([0.5])
    wide.classes_ = np.array([0, 1])
    wide.n_features_in_ = 200_000
    tracemalloc.start()
    try:
        fast = linear_predict(wide)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fast is not None
    assert peak < 24 << 20, f"probing a 1.6 MB model took {peak >> 20} MiB"  # 64 rows would be ~200 MiB
