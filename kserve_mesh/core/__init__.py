"""The pure domain of the mesh: records, cache accounting, load priority, failures, vmodels.

Nothing here does I/O, starts a task or reads a clock: times come in as arguments (epoch
milliseconds for last-used stamps, as ModelMesh stores them), so every rule tests in virtual time.
This package must not import grpc, fastapi, etcd, kubernetes or asyncio (checked by a test).
"""
