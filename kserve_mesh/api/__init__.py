"""Front doors: KServe V2 gRPC + REST, the ModelMesh management API, metrics and health.

Handlers only convert, call ``mesh.Instance``, and convert back; errors go through ``errors.py``.
"""
