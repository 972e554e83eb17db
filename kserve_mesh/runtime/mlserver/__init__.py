"""The MLServer runtime adapter: ModelMesh-style ``mlserver-1.x`` runtimes behind our ModelRuntime SPI.

MLServer 1.7 cannot share a process (or a virtual environment) with kserve, so it runs as its own
process from its own venv (``scripts/mlserver-venv.sh``). ``MLServerRuntime`` starts it (or attaches
to a running one), writes a ``model-settings.json`` per model, loads and unloads through MLServer's
repository API, measures what each load costs in memory, and forwards V2 inference over gRPC.
``python -m kserve_mesh.runtime.mlserver`` serves the adapter as a runtime process for a mesh.
"""

from kserve_mesh.runtime.mlserver.config import MLServerConfig, find_venv
from kserve_mesh.runtime.mlserver.process import MLServerEndpoint, MLServerProcess
from kserve_mesh.runtime.mlserver.runtime import MLServerRuntime

__all__ = ["MLServerConfig", "MLServerEndpoint", "MLServerProcess", "MLServerRuntime", "find_venv"]
