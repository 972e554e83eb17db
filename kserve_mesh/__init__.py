"""kserve-mesh: a multi-model serving mesh for KServe.

Many models share a few serving processes: a model loads on its first request, the most recently
used stay in memory, the coldest are evicted when space runs out, and every request is routed to a
process that holds the model. Layers (inner to outer): ``core`` (pure) <- ``mesh`` (the instance)
<- ``api`` / ``cli``; ``store``, ``runtime`` and ``storage`` are adapters behind ports.
"""

__version__ = "0.1.0"
