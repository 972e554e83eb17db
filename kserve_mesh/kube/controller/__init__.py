"""The Kubernetes side: ``kserve-mesh controller``, a kopf operator.

It watches InferenceServices, Predictors and (Cluster)ServingRuntimes, reconciles model resources
with the mesh over its management API (``mesh_client.GrpcMesh`` under ``kube/reconcile.py``), runs
the runtime Deployments and writes status. It never loads the mesh itself, nor the standalone side.

- ``main``: the process (settings, logging, leader election, kopf's operator); ``settings``: its
  flags and env; ``leader``: leader election among replicas through a Lease.
- ``handlers``: the kopf handlers on a registry of their own; ``model_reconcile``: one reconcile
  of a model resource as the controller runs it (status patch, events, settledness).
- ``kube_api``: the few Kubernetes API calls kopf does not make; ``namespace_secrets``: what a
  namespace holds for its runtime pods; ``runtime_sync``: runtime Deployments kept as planned.
- ``deploy/``: pure builders of what the controller creates (Deployments, Services, HPAs, the
  ServiceMonitor, the serving config, security material, the plan of a namespace).
- ``mesh_client``: ``GrpcMesh``, the reconcile's port over ``mmesh.ModelMesh``.

``python -m kserve_mesh.kube.controller`` runs it, as ``kserve-mesh controller`` does.
"""
