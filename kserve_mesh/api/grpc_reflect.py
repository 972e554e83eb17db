"""gRPC server reflection, ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``.

What ``grpcurl``, ``evans``, Postman and grpcio-reflection's ``ProtoReflectionDescriptorDatabase``
use to list the services of a server and to describe and call their methods without the protos.
Both versions list every service served and answer with file descriptors from the process's default
descriptor pool, where the generated modules put them: the V2 service (``grpc_predict_v2.proto``,
loaded from kserve's generated module by protocol/v2.py), ``mmesh.ModelMesh``, health and
reflection itself.

grpcio-reflection 1.81 (the last release that runs on protobuf 6, which kserve requires) ships only
v1alpha. The v1 protocol is the v1alpha one under a new package: the same messages, fields and
numbers, so the bytes on the wire are identical. v1 is therefore served by the v1alpha servicer
under the v1 method name, with the v1alpha (de)serializers, and the v1 file descriptor that clients
may ask for (``describe grpc.reflection.v1.ServerReflection``) is derived from the v1alpha one at
import (package, file name and options renamed) and added to the default pool. That keeps one
implementation and no second generated module to keep in step with a protoc version; when a
grpcio-reflection with ``grpc_reflection.v1`` can be used, its servicer replaces this.

With authentication on, reflection needs the ``infer`` role (api/auth/policy.py): it reveals no data,
only service names and message shapes, but nothing a caller without credentials needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
METHOD = "ServerReflectionInfo"


def _renamed_types(proto: descriptor_pb2.FileDescriptorProto, old: str, new: str) -> None:
    """Point every type reference of ``proto`` from package ``old`` to package ``new``."""
    prefix = f".{old}."

    def rename(type_name: str) -> str:
        return f".{new}.{type_name[len(prefix):]}" if type_name.startswith(prefix) else type_name

    def messages(items: Iterable[descriptor_pb2.DescriptorProto]) -> Iterable[descriptor_pb2.DescriptorProto]:
        for message in items:
            yield message
            yield from messages(message.nested_type)

    for message in messages(proto.message_type):
        for field in message.field:
            if field.type_name:
                field.type_name = rename(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)


def v1_file_descriptor() -> FileDescriptor:
    """``grpc/reflection/v1/reflection.proto`` in the default pool (added on first use)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(V1_FILE)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old = proto.package
    proto.name, proto.package = V1_FILE, V1_PACKAGE
    _renamed_types(proto, old, V1_PACKAGE)
    proto.options.Clear()  # upstream v1's options
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(V1_FILE)


class _Pool:
    """The default pool, also finding the file of a method (``pkg.Service.Method``), which the
    Python pool does not (grpcurl's ``describe pkg.Service.Method`` asks for it; C++ servers answer)."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def reflection_handlers(services: Iterable[str]) -> tuple[grpc.GenericRpcHandler, ...]:
    """Reflection v1alpha and v1 listing ``services`` and both reflection services themselves."""
    v1_file_descriptor()
    names = (*services, V1ALPHA_SERVICE, V1_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names, pool=_Pool(descriptor_pool.Default()))
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    return tuple(grpc.method_handlers_generic_handler(service, {METHOD: method})
                 for service in (V1ALPHA_SERVICE, V1_SERVICE))
