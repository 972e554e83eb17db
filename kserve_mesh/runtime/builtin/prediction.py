"""A model's ``predict`` as the runtime calls it: a model refusing its input becomes
``InvalidArgument`` in the model's own words, any other failure ``InternalError`` (details only in
the log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from kserve_mesh.core.errors import InternalError, InvalidArgument, MeshError
from kserve_mesh.runtime.builtin.models import LoadedModel

logger = logging.getLogger("kserve_mesh.runtime.builtin.runtime")  # the runtime's log, as before the split


MAX_REJECTION_CHARS = 500
"""How much of a model's own message about a rejected input goes back to the client."""


def rejects_input(exc: Exception) -> bool:
    """A model library's way of saying the input is wrong (not that the model broke): ValueError
    and TypeError (sklearn's checks, XGBoostError), and onnxruntime's InvalidArgument."""
    return isinstance(exc, (ValueError, TypeError)) or (
        type(exc).__name__ == "InvalidArgument" and type(exc).__module__.startswith("onnxruntime"))


def predict(model_id: str, model: LoadedModel, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``model.predict``; the model refusing the data (NaN for sklearn, say) is ``InvalidArgument``
    with the model's own words, anything else ``InternalError`` with the details in the log."""
    try:
        return model.predict(feed)
    except MeshError:
        raise
    except Exception as exc:
        raise _as_mesh_error(model_id, exc) from exc


def predict_stream(model_id: str, model: LoadedModel, feed: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """``model.predict_stream``'s answers as they come, failures converted as ``predict``'s."""
    answers = model.predict_stream(feed)
    try:
        while True:
            try:
                answer = next(answers)
            except StopIteration:
                return
            except MeshError:
                raise
            except Exception as exc:
                raise _as_mesh_error(model_id, exc) from exc
            yield answer
    finally:
        answers.close()


def _as_mesh_error(model_id: str, exc: Exception) -> MeshError:
    if rejects_input(exc):
        detail = str(exc).strip() or type(exc).__name__
        if len(detail) > MAX_REJECTION_CHARS:
            detail = detail[:MAX_REJECTION_CHARS] + "..."
        logger.debug("model %s rejected an input: %s: %s", model_id, type(exc).__name__, detail)
        return InvalidArgument(f"model '{model_id}' rejected the input: {detail}")
    logger.error("model %s failed to predict", model_id, exc_info=exc)
    return InternalError(f"model '{model_id}' failed to predict ({type(exc).__name__}); see the server log")
