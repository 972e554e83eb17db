"""The Triton runtime adapter: ModelMesh-style ``triton-2.x`` runtimes behind our ModelRuntime SPI.

``TritonRuntime`` starts a Triton Inference Server (from the ``nvidia-pytriton`` wheel, FACTS.md) or
attaches to a running one, lays models out in its repository as ModelMesh's triton-adapter does,
loads and unloads them through Triton's repository API in explicit model-control mode, measures
what each load costs in memory, forwards V2 inference over gRPC, restarts a Triton that died and
recycles one that holds memory no model accounts for. ``python -m kserve_mesh.runtime.triton``
serves the adapter as a runtime process for a mesh. docs/triton.md says what differs from a real
Triton deployment.
"""

from kserve_mesh.runtime.triton.config import TritonConfig, find_triton
from kserve_mesh.runtime.triton.process import TritonEndpoint, TritonProcess
from kserve_mesh.runtime.triton.runtime import TritonRuntime

__all__ = ["TritonConfig", "TritonEndpoint", "TritonProcess", "TritonRuntime", "find_triton"]
