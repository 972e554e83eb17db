"""KServe resources -> mesh specs (pure), runtime selection, status mapping, and the controller."""
