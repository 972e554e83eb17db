"""grpc.health.v1 and server reflection on an in-process grpc.aio server, fed by a stand-in
instance (``serving_ready`` and ``shutting_down`` are all health reads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kserve_mesh.api.grpc_health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthService, add_health_and_reflection

SERVICES = ("", "inference.GRPCInferenceService", "mmesh.ModelMesh")


@pytest.fixture()
async def served() -> AsyncIterator[tuple[SimpleNamespace, HealthService, grpc.aio.Channel]]:
    instance = SimpleNamespace(serving_ready=True, shutting_down=False)
    server = grpc.aio.server()
    health = add_health_and_reflection(server, instance, interval_s=0.02)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    health.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield instance, health, channel
    finally:
        await health.stop()
        await channel.close()
        await server.stop(None)


async def check(channel: grpc.aio.Channel, service: str) -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return answer.status


async def test_check_follows_readiness_runtime_and_draining(served) -> None:  # type: ignore[no-untyped-def]
    instance, _, channel = served
    assert [await check(channel, s) for s in SERVICES] == [SERVING] * 3
    instance.serving_ready = False  # not ready, or the runtime is down
    assert [await check(channel, s) for s in SERVICES] == [NOT_SERVING] * 3
    instance.serving_ready, instance.shutting_down = True, True  # draining
    assert await check(channel, "") == NOT_SERVING
    instance.shutting_down = False
    assert await check(channel, "mmesh.ModelMesh") == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await check(channel, "grpc.health.v1.Nope")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_broken_instance_is_not_serving() -> None:
    def broken() -> bool:
        raise AttributeError("half torn down")

    health = HealthService(broken)
    assert health.status("") == NOT_SERVING and health.status("other") is None


async def test_watch_streams_changes_and_ends_at_stop(served) -> None:  # type: ignore[no-untyped-def]
    instance, health, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=30)
    unknown = stub.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=30)
    assert (await call.read()).status == SERVING
    assert (await unknown.read()).status == SERVICE_UNKNOWN  # and the stream stays open
    instance.serving_ready = False  # seen by the polling task, without any Check
    assert (await asyncio.wait_for(call.read(), 5)).status == NOT_SERVING
    instance.serving_ready = True
    assert (await asyncio.wait_for(call.read(), 5)).status == SERVING
    await health.stop()
    assert (await asyncio.wait_for(call.read(), 5)).status == NOT_SERVING
    assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK
    assert (await asyncio.wait_for(unknown.read(), 5)) is grpc.aio.EOF
    assert await check(channel, "") == NOT_SERVING  # for good, whatever the instance says


async def test_watch_streams_are_capped(served) -> None:  # type: ignore[no-untyped-def]
    _, health, channel = served
    health.max_watches = 2
    stub = health_pb2_grpc.HealthStub(channel)
    calls = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(2)]
    for call in calls:
        assert (await call.read()).status == SERVING
    extra = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await extra.read()
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    calls[0].cancel()
    await asyncio.sleep(0.1)
    again = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)  # a slot came free
    assert (await again.read()).status == SERVING
    again.cancel()
    calls[1].cancel()


async def test_reflection_lists_every_service_over_v1alpha_and_v1(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    expected = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService", "mmesh.ModelMesh"]
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(channel)
    v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                               request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                               response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    for call in (v1alpha.ServerReflectionInfo(timeout=5), v1(timeout=5)):
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.write(reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection.ServerReflectionInfo"))
        await call.done_writing()
        listed = await call.read()
        assert sorted(s.name for s in listed.list_services_response.service) == expected
        found = await call.read()
        assert found.HasField("file_descriptor_response"), found
