"""An example custom Python model for kserve-mesh's built-in runtime (docs/formats.md).

It scores short texts by a word list read from ``words.json`` beside it: input ``text`` (BYTES,
one string per element), outputs ``score`` (FP32, positive minus negative words) and ``label``
(BYTES). Register the folder as a model of type ``python``, or put it in the folder that
``kserve-mesh up --models DIR`` serves (a folder with a ``model.py`` is a custom model)::

    mkdir -p /tmp/my-models && cp -r examples/custom-model /tmp/my-models/sentiment
    kserve-mesh up --models /tmp/my-models
    curl -s localhost:8008/v2/models/sentiment/infer -d \
      '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a great day", "awful"]}]}'
"""

from __future__ import annotations

import json

import numpy as np

from kserve_mesh.model import InvalidInput, Model, Tensor


class WordListSentiment(Model):
    inputs = (Tensor("text", "BYTES", [-1]),)
    outputs = (Tensor("score", "FP32", [-1]), Tensor("label", "BYTES", [-1]))

    def load(self) -> None:
        words = json.loads((self.model_dir / "words.json").read_text(encoding="utf-8"))
        self.positive = frozenset(words["positive"])
        self.negative = frozenset(words["negative"])
        self.threshold = float(self.parameters.get("threshold", 0))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = []
        for item in inputs["text"].ravel():
            if not isinstance(item, bytes):
                raise InvalidInput("text must be BYTES (UTF-8 strings)")
            tokens = item.decode("utf-8", errors="replace").lower().split()
            scores.append(sum(t in self.positive for t in tokens) - sum(t in self.negative for t in tokens))
        score = np.array(scores, dtype=np.float32)
        labels = np.array(["positive" if s > self.threshold else "negative" if s < -self.threshold else "neutral"
                           for s in score])
        return {"score": score, "label": labels}
