"""KServe resources on a mesh without Kubernetes: ``kserve-mesh apply | get | delete``.

- ``service``: ``KubeService``, which the REST routes (``api/rest_kube.py``) call: apply validates
  every document before storing any, reads compute status from the mesh, deletes remove vmodels.
- ``ports``: ``ResourceStore``, all it needs of storage; the mesh's store implements it through
  ``kserve_mesh.store.kube_resources``.
- ``instance_mesh``: ``InstanceMesh``, the reconcile's port (``kube/reconcile.py``) on the mesh's
  own ``Instance``.
"""
