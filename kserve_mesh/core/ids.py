"""Distinct id types, so a model id is never passed where an instance id belongs."""

from typing import NewType

ModelId = NewType("ModelId", str)
VModelId = NewType("VModelId", str)
InstanceId = NewType("InstanceId", str)
