"""Kubeflow Pipelines v2 components for kserve-mesh, and an example pipeline that uses them.

The folder ``pipelines/`` is the package ``kserve_mesh_pipelines`` (``pip install
'kserve-mesh[pipelines]'``): import the components from here and use them in your own pipelines::

    from kserve_mesh_pipelines import register_model, smoke_test

Each component is a lightweight Python component whose body uses the standard library only (see
``components.py``); ``example_pipeline.py`` trains, uploads, registers and smoke-tests a model and
``example_pipeline.yaml`` is its compiled form.
"""

from .components import deploy_inference_service, register_model, smoke_test

__all__ = ["deploy_inference_service", "register_model", "smoke_test"]
