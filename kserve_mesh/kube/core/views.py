"""What the kube side reads back from the mesh: model and vmodel status, as values (pure).

These mirror the management API's status messages (``mmesh.ModelStatusInfo`` /
``VModelStatusInfo``), holding only the fields that the status mapping (``status.py``) and the
reconcile (``kube/reconcile.py``) read. Each side's mesh adapter makes them: the controller's from
the gRPC answers (``controller/mesh_client.py``), a standalone mesh's from its in-process
``Instance`` (``standalone/instance_mesh.py``). So the KServe model never depends on how the mesh
represents its own state.
"""

from __future__ import annotations

from dataclasses import dataclass

from kserve_mesh.core.records import ModelState, VModelState


@dataclass(frozen=True, slots=True)
class CopyInfo:
    """One copy of a model: the instance it is on, its state there, and when that state began."""

    location: str
    state: ModelState
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ModelStatusInfo:
    """A concrete model as the mesh reports it (``NOT_FOUND`` when it is not registered)."""

    model_id: str
    state: ModelState
    errors: tuple[str, ...] = ()
    copies: tuple[CopyInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class VModelStatusInfo:
    """A vmodel as the mesh reports it: its active and target models, with their status."""

    vmodel_id: str
    state: VModelState
    active: str = ""
    target: str = ""
    owner: str = ""
    active_status: ModelStatusInfo | None = None
    target_status: ModelStatusInfo | None = None
