"""The KServe model, pure: resources parsed and validated, runtime selection, translation into mesh
specs, status mapping, and YAML/JSON documents.

The same rule as ``kserve_mesh.core``: no I/O, no asyncio, no transport; it imports nothing of
kopf, Kubernetes clients, the store, the mesh or the front doors (``.importlinter`` checks it).
Both sides build on it: the controller (``kube/controller/``) and a standalone mesh
(``kube/standalone/``).

- ``errors``: ``InvalidSpec`` (message starts with the field path) and the runtime-selection errors.
- ``schema``: typed readers over decoded documents, each naming the field path it reads.
- ``resources``: the kinds and what each holds; ``parse``: one document -> its resource.
- ``runtimes``: which ServingRuntime serves a model; the runtimes the mesh ships.
- ``translate``: a model resource -> ``MeshModelSpec`` (vmodel, owner, model id, model info).
- ``views``: model/vmodel status as the mesh reports it; ``status``: that -> resource status.
- ``manifest``: multi-document YAML/JSON, bounded.
"""
