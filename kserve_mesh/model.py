"""Custom Python models: the base class the built-in runtime serves, as ``kserve.Model`` and
MLServer's ``MLModel`` are for theirs.

Write a subclass, implement ``load`` and ``predict``, and put it in a folder as ``model.py`` beside
the files it reads (weights, vocabularies...); register the folder with type ``python`` (or let
``kserve-mesh up`` find it: a folder with a ``model.py`` is a custom model)::

    # my-model/model.py
    import numpy as np
    from kserve_mesh.model import Model, Tensor

    class Doubler(Model):
        inputs = (Tensor("x", "FP32", [-1, 4]),)        # optional: V2 metadata, checked per request
        outputs = (Tensor("y", "FP32", [-1, 4]),)

        def load(self) -> None:
            self.factor = float((self.model_dir / "factor.txt").read_text())

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"y": inputs["x"] * self.factor}

A class from an installed package works too: a folder with a ``model-settings.json`` such as
``{"implementation": "my_package.models.Doubler", "parameters": {"factor": 2}}`` (MLServer's
names). When ``model.py`` defines several subclasses, ``implementation`` names the one to serve.

What the runtime does with it:

- ``__init__(name, model_dir, parameters)`` then ``load()``, in a load thread, measured for the
  model's size like any other format; ``predict(inputs)`` in a worker thread (never on the event
  loop), under the request's deadline; ``unload()`` when the model is evicted or unregistered.
- Requests are checked against ``inputs`` (names, datatypes, shapes; numeric inputs cast to the
  declared datatype) when it is given; without it, every tensor of the request is passed as sent.
- ``predict`` returns a dict of output name → array (numpy, or anything ``numpy.asarray`` takes;
  str arrays become V2 BYTES), or one array (named after the only declared output, else
  ``output-0``). Raising ``ValueError``/``TypeError`` (or ``InvalidInput``) rejects the input:
  the client gets an invalid-argument error with your message. Any other exception, or a wrong
  return type, is an internal error naming the model; the traceback goes to the server log only.
- An exception in ``import``/``__init__``/``load`` (or ``sys.exit``) fails the load with a message
  naming the model, the exception and the line of ``model.py``; the runtime keeps serving the
  other models.

Safety: a custom model is code, run inside the runtime process with its permissions, exactly like
a pickled sklearn model. The runtime only reads models from storage the storage policy allows
(local paths under the configured roots, PVCs, allow-listed hosts): whoever can write there, or
register a model pointing there, can run code in the runtime. ``implementation`` imports a module
already installed in the runtime's environment. Code that crashes the interpreter
(``os._exit``, a segfault in a C extension) takes the runtime's process down: a runtime child
(``--runtime process``, or a runtime container) is supervised and restarted, its models reloading on
demand; the default in-process runtime is the mesh itself. See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["InvalidInput", "Model", "Tensor"]


@dataclass(frozen=True)
class Tensor:
    """One input or output in a model's V2 metadata: ``datatype`` a V2 datatype (``FP32``,
    ``INT64``, ``BYTES``...), ``shape`` with -1 for a variable dimension (the batch)."""

    name: str
    datatype: str
    shape: Sequence[int] = field(default=(-1,))


class InvalidInput(ValueError):
    """Raise from ``predict`` to refuse an input: the client gets your message as an
    invalid-argument error (gRPC INVALID_ARGUMENT, HTTP 400)."""


class Model:
    """The base class of custom Python models (see the module docstring).

    ``name`` is the model id, ``model_dir`` the local folder the model's files were fetched to,
    ``parameters`` the ``parameters`` of its ``model-settings.json`` (empty without one).
    """

    inputs: Sequence[Tensor] = ()
    """The model's inputs, if it declares them (class attribute, or set in ``load``)."""
    outputs: Sequence[Tensor] = ()
    """The model's outputs, if it declares them."""

    def __init__(self, name: str, model_dir: Path, parameters: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.model_dir = Path(model_dir)
        self.parameters: dict[str, Any] = dict(parameters or {})

    def load(self) -> None:
        """Read the model's files from ``self.model_dir``. Runs once, in a load thread."""

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any] | np.ndarray:
        """Answer one request: ``inputs`` maps each input name to a numpy array."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def predict_stream(self, inputs: dict[str, np.ndarray]) -> Iterator[Mapping[str, Any] | np.ndarray]:
        """Optional: answer one request with several answers (tokens, partial results), each as
        ``predict`` returns one, yielded as soon as it is ready. A model that implements it streams
        through ``generate_stream`` (REST, server-sent events) and ``ModelStreamInfer`` (gRPC, as
        tritonclient's ``start_stream`` uses it); ``infer`` and ``generate`` still call ``predict``.
        Runs in a worker thread; when the client goes away the generator is closed (its ``finally``
        runs) before its next answer."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def unload(self) -> None:
        """Release what ``load`` took beyond Python objects (files, sessions). Optional."""
