"""A light SDK over the mesh's REST API, used by the CLI (and later the notebook widget and the
pipeline steps). Importing it must not import the server stack: only httpx and the stdlib."""

from kserve_mesh.client.rest import MeshClient, MeshClientError

__all__ = ["MeshClient", "MeshClientError"]
