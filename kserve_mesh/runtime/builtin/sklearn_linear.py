"""scikit-learn's linear models predicted from their coefficients, exactly as scikit-learn would.

A linear estimator's ``predict`` is one matrix product (``X @ coef_.T + intercept_``), then, for a
classifier, the class of the highest score (binary: the positive class where the score is > 0).
For a request of a few rows that product takes a few microseconds; scikit-learn spends ~300 µs
around it re-checking the input (array conversion, dataframe detection, feature counts) that the
runtime has already validated against the model's metadata. Per-customer models are often exactly
such models, so the runtime computes them directly:

* only for estimators whose ``predict`` and scores are scikit-learn's own linear ones
  (``LinearClassifierMixin``'s, ``LinearModel``'s and the few regressors' that come down to the same
  product: LogisticRegression, SGDClassifier, LinearSVC, Perceptron, LinearRegression, Ridge,
  Lasso, ElasticNet, SGDRegressor, ...), identified by the methods themselves, so a subclass that
  overrides either keeps scikit-learn's path (RidgeClassifier, with its own multilabel ``predict``,
  does too);
* with dense ``coef_`` (not ``sparsify()``-ed) and a known feature count that matches it;
* alone, or at the end of a plain ``Pipeline`` whose other steps are ``StandardScaler`` (or
  passthrough), each applied as its ``transform`` does: ``(X - mean_) / scale_`` on a copy;
* the same operations in the same order on the same arrays as scikit-learn 1.x, so the results are
  bit for bit the same; this is checked when the model loads, on probe rows, and any difference
  (another scikit-learn version, an unusual attribute) keeps the model on scikit-learn's path;
* for finite float64 rows only (``SklearnModel.predict`` decides): anything else still goes through
  scikit-learn, which converts, refuses or accepts it as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["linear_predict"]

_PROBE_ROWS = 64
_PROBE_BYTES = 4 << 20
# scikit-learn's own regressor methods that come down to ``X @ coef_.T + intercept_`` on dense rows
_REGRESSOR_PREDICT = frozenset(
    {"LinearModel.predict", "MultiOutputLinearModel.predict", "Ridge.predict", "BaseSGDRegressor.predict"}
)
_REGRESSOR_SCORES = frozenset(
    {"LinearModel._decision_function", "ElasticNet._decision_function", "BaseSGDRegressor._decision_function"}
)


def _sklearns(method: Any) -> str | None:
    """The qualified name of a method defined in scikit-learn's linear_model package, else None."""
    module = getattr(method, "__module__", "") or ""
    return getattr(method, "__qualname__", None) if module.startswith("sklearn.linear_model.") else None


def _classifier(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    coef, intercept, classes = estimator.coef_, estimator.intercept_, estimator.classes_
    coef_t = coef.T if coef.ndim == 2 else coef

    def predict(x: np.ndarray) -> np.ndarray:
        scores = x @ coef_t + intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return classes.take(indices, axis=0)

    return predict if isinstance(classes, np.ndarray) else None


def _regressor(estimator: Any) -> Callable[[np.ndarray], np.ndarray]:
    coef, intercept = estimator.coef_, estimator.intercept_
    coef_t = coef if coef.ndim == 1 else coef.T

    def predict(x: np.ndarray) -> np.ndarray:
        return x @ coef_t + intercept

    return predict


def _linear(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The matrix product for one of scikit-learn's own linear models, unverified; else None."""
    try:
        from sklearn.linear_model._base import LinearClassifierMixin
    except ImportError:  # a scikit-learn without these private bases: its own path
        return None
    kind = type(estimator)
    coef = getattr(estimator, "coef_", None)
    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype != np.float64 or coef.ndim not in (1, 2):
        return None
    if not isinstance(n_features, int) or n_features < 1 or coef.shape[-1] != n_features:
        return None
    if not isinstance(getattr(estimator, "intercept_", None), (np.ndarray, float, int)):
        return None
    if (
        getattr(kind, "predict", None) is LinearClassifierMixin.predict
        and getattr(kind, "decision_function", None) is LinearClassifierMixin.decision_function
    ):
        return _classifier(estimator)
    if (
        _sklearns(getattr(kind, "predict", None)) in _REGRESSOR_PREDICT
        and _sklearns(getattr(kind, "_decision_function", None)) in _REGRESSOR_SCORES
    ):
        return _regressor(estimator)
    return None


def _pipeline(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A plain ``Pipeline`` of ``StandardScaler`` steps (or passthrough) ending in a linear model:
    each scaler's ``(X - mean_) / scale_`` on a copy, as its ``transform`` does, then the product."""
    try:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    if type(estimator) is not Pipeline or not estimator.steps:
        return None
    *steps, (_, last) = estimator.steps
    scalers: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for _, step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if type(step) is not StandardScaler:
            return None
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        for arr in (mean, scale):
            if arr is not None and (not isinstance(arr, np.ndarray) or arr.dtype != np.float64):
                return None
        scalers.append((mean, scale))
    final = _linear(last)
    if final is None:
        return None

    def predict(x: np.ndarray) -> np.ndarray:
        for mean, scale in scalers:
            x = x.copy()
            if mean is not None:
                x -= mean
            if scale is not None:
                x /= scale
        return final(x)

    return predict


def linear_predict(estimator: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function computing ``estimator.predict`` on finite float64 rows ``[n, n_features]`` without
    scikit-learn's checks, or None when the estimator is not one of scikit-learn's own linear models
    (alone, or at the end of a plain ``Pipeline`` of ``StandardScaler`` steps) or the function does
    not give exactly scikit-learn's answers on probe rows (64, fewer for a model of more than ~8,000
    features, so that the probe stays within ~4 MiB)."""
    fast = _linear(estimator) or _pipeline(estimator)
    n_features = getattr(estimator, "n_features_in_", None)
    if fast is None or not isinstance(n_features, int) or n_features < 1:
        return None
    # up to 64 rows, fewer for very wide models: the probe stays within ~4 MiB whatever the width
    count = max(2, min(_PROBE_ROWS, _PROBE_BYTES // (8 * n_features)))
    probe = np.zeros((count, n_features))
    np.random.default_rng(0).standard_normal(out=probe[1:])
    probe[1:] *= 10.0
    try:
        pairs = [(np.asarray(fast(rows)), np.asarray(estimator.predict(rows))) for rows in (probe, probe[1:2])]
    except Exception:  # noqa: BLE001 - any failure here only means: keep scikit-learn's path
        return None
    for got, expected in pairs:  # many rows and one (a product of one row may round differently)
        if got.shape != expected.shape or got.dtype != expected.dtype or not np.array_equal(got, expected):
            return None
    return fast
