"""scikit-learn predicts without redoing the input checks the runtime did (issue 15, cheaper
predict): finite float inputs skip scikit-learn's finiteness check and parameter validation; any
other input takes the plain path, so NaN is still refused by the estimators that refuse it and
still reaches those that accept it."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from kserve_mesh.runtime.builtin import loaders
from kserve_mesh.runtime.builtin.loaders import SklearnModel
from kserve_mesh.runtime.builtin.prediction import predict

X, Y = load_iris(return_X_y=True)


@pytest.fixture
def trusted_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    calls: list[bool] = []
    real = loaders._trusted_inputs

    @contextlib.contextmanager
    def counting():  # type: ignore[no-untyped-def]
        calls.append(True)
        with real():
            assert sklearn.get_config()["assume_finite"] and sklearn.get_config()["skip_parameter_validation"]
            yield

    monkeypatch.setattr(loaders, "_trusted_inputs", counting)
    return calls


def test_finite_inputs_predict_the_same_without_sklearns_checks(trusted_calls: list[bool]) -> None:
    estimator = DecisionTreeClassifier(random_state=0).fit(X, Y)  # not linear: scikit-learn's predict
    model = SklearnModel(estimator)
    got = predict("iris", model, {"input-0": X[:20]})["output-0"]
    assert got.tolist() == estimator.predict(X[:20]).tolist() and len(trusted_calls) == 1
    assert not sklearn.get_config()["assume_finite"]  # the configuration did not leak out


def test_nan_takes_the_plain_path_refused_or_accepted_as_the_estimator_says(trusted_calls: list[bool]) -> None:
    rows = X[:3].copy()
    rows[0, 0] = np.nan
    from kserve_mesh.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="NaN"):
        predict("iris", SklearnModel(LogisticRegression(max_iter=500).fit(X, Y)), {"input-0": rows})
    hist = HistGradientBoostingClassifier(max_iter=5).fit(X, Y)  # handles NaN natively
    got = predict("hist", SklearnModel(hist), {"input-0": rows})["output-0"]
    assert got.tolist() == hist.predict(rows).tolist()
    assert trusted_calls == []
