"""Packaging beyond what pyproject's package discovery can say: the ``pipelines/`` folder installs as
the ``kserve_mesh_pipelines`` package (its components run on images without kserve-mesh)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["kserve_mesh", "kserve_mesh.*"]), "kserve_mesh_pipelines"],
    package_dir={"kserve_mesh_pipelines": "pipelines"},
)
