"""KServe resources -> mesh specs (pure), runtime selection, status mapping, and the controller.

Public API (stable; the controller builds on it):

- ``resources.parse(doc)`` -> ``InferenceService | Predictor | ServingRuntime``; ``is_modelmesh(doc)``;
  ``errors.InvalidSpec`` (message starts with the field path), ``NoSupportingRuntime``,
  ``RuntimeNotRecognized``.
- ``runtimes.select_runtime(model, namespace, runtimes)``; ``runtimes.BUILTIN_RUNTIMES``.
- ``translate.translate(resource, runtimes)`` -> ``MeshModelSpec(vmodel_id, owner, model_id, info,
  runtime)``.
- ``status.predictor_state(vmodel_status, problem)``, ``status.isvc_status(...)``,
  ``status.predictor_status(...)``, ``status.ServiceEndpoints``.
- ``reconcile.Reconciler(mesh, endpoints, clock)`` with ``apply / observe / invalid / remove /
  render / reconcile_document``; ``reconcile.MeshManagement`` (the port);
  ``mesh_adapters.InstanceMesh`` / ``mesh_adapters.GrpcMesh`` (its adapters).
- ``standalone.KubeService``: resources kept in the mesh's own store (``kserve-mesh apply``).
"""
