"""Write the CustomResourceDefinitions of kserve-mesh: ServingRuntime, ClusterServingRuntime and
ModelMesh's Predictor (all ``serving.kserve.io/v1alpha1``).

    python manifests/crd/generate.py            # rewrites manifests/crd/bases/*.yaml
    python manifests/crd/generate.py --check    # exit 1 if the checked-in files differ

The two runtime CRDs share one spec schema and a container schema appears in several places, so
the YAML is generated from the Python structures below rather than copied by hand; a unit test
regenerates it and compares. The schemas are structural (apiextensions.k8s.io/v1): every node has
a ``type``, free-form sub-objects (probes, affinity, volumes) say so with
``x-kubernetes-preserve-unknown-fields``, and the API server's strict field validation rejects any
field not listed here. The InferenceService CRD is not here: it comes with a KServe install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "serving.kserve.io"
VERSION = "v1alpha1"
HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "bases"

Schema = dict[str, Any]


# -- small builders ------------------------------------------------------------------------------


def string(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "string", **extra}, description)


def integer(description: str = "", fmt: str = "int32", **extra: Any) -> Schema:
    return _described({"type": "integer", "format": fmt, **extra}, description)


def boolean(description: str = "") -> Schema:
    return _described({"type": "boolean"}, description)


def array(items: Schema, description: str = "", **extra: Any) -> Schema:
    return _described({"type": "array", "items": items, **extra}, description)


def obj(properties: dict[str, Schema], description: str = "", required: list[str] | None = None,
        **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema.update(extra)
    return _described(schema, description)


def string_map(description: str = "") -> Schema:
    return _described({"type": "object", "additionalProperties": {"type": "string"}}, description)


def free_form(description: str = "") -> Schema:
    """An object whose fields the API server keeps as given (a Kubernetes core type)."""
    return _described({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, description)


def quantity() -> Schema:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": True,
    }


def _described(schema: Schema, description: str) -> Schema:
    return {"description": description, **schema} if description else schema


# -- shared pieces -------------------------------------------------------------------------------

ENV_VAR = obj(
    {"name": string("Name of the environment variable."), "value": string(),
     "valueFrom": free_form("A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...).")},
    required=["name"],
)

CONTAINER = obj(
    {
        "name": string("Container name, unique in the pod."),
        "image": string("Container image."),
        "imagePullPolicy": string(enum=["Always", "Never", "IfNotPresent"]),
        "command": array(string()),
        "args": array(string()),
        "workingDir": string(),
        "env": array(ENV_VAR, "Environment variables of the container."),
        "envFrom": array(free_form()),
        "ports": array(obj(
            {"name": string(), "containerPort": integer(minimum=1, maximum=65535),
             "protocol": string(enum=["TCP", "UDP", "SCTP"]), "hostIP": string(),
             "hostPort": integer()},
            required=["containerPort"])),
        "resources": obj({
            "limits": {"type": "object", "additionalProperties": quantity()},
            "requests": {"type": "object", "additionalProperties": quantity()},
        }, "CPU and memory of the container (core/v1 ResourceRequirements)."),
        "volumeMounts": array(obj(
            {"name": string(), "mountPath": string(), "readOnly": boolean(), "subPath": string(),
             "subPathExpr": string(), "mountPropagation": string()},
            required=["name", "mountPath"])),
        "livenessProbe": free_form("A core/v1 Probe."),
        "readinessProbe": free_form("A core/v1 Probe."),
        "startupProbe": free_form("A core/v1 Probe."),
        "lifecycle": free_form("A core/v1 Lifecycle."),
        "securityContext": free_form("A core/v1 SecurityContext."),
        "terminationMessagePath": string(),
        "terminationMessagePolicy": string(enum=["File", "FallbackToLogsOnError"]),
    },
    "A container of the runtime pod (a subset of core/v1 Container; unknown fields are rejected).",
    required=["name"],
)

MODEL_FORMAT = obj(
    {
        "name": string("Model format name, e.g. sklearn, xgboost, lightgbm, onnx."),
        "version": string("Major version of the format; a model asking for a version must match it."),
        "autoSelect": boolean("Whether models of this format may land here without naming the runtime."),
        "priority": integer(
            "Among runtimes that autoSelect a format, the higher priority wins (kserve-mesh honours "
            "it; ModelMesh ignored it).", minimum=1),
    },
    required=["name"],
)

RUNTIME_SPEC = obj(
    {
        "supportedModelFormats": array(MODEL_FORMAT, "Model formats this runtime serves."),
        "multiModel": boolean("True for runtimes that serve many models per pod (required by the mesh)."),
        "disabled": boolean("A disabled runtime is never chosen and its Deployment is removed."),
        "protocolVersions": array(
            string(enum=["v1", "v2", "grpc-v1", "grpc-v2"]),
            "Inference protocols the runtime speaks."),
        "containers": array(CONTAINER, "Containers of the runtime; the mesh container is added by "
                            "the controller.", minItems=1),
        "volumes": array(free_form("A core/v1 Volume."), "Volumes of the runtime pod."),
        "nodeSelector": string_map(),
        "affinity": free_form("A core/v1 Affinity."),
        "tolerations": array(free_form("A core/v1 Toleration.")),
        "imagePullSecrets": array(obj({"name": string()}, required=["name"])),
        "labels": string_map("Labels added to the runtime pods."),
        "annotations": string_map(
            "Annotations added to the runtime pods; kserve-mesh also reads maxLoadingConcurrency."),
        "replicas": integer("Pods of this runtime (overrides podsPerRuntime).", minimum=0),
        "grpcEndpoint": string("Where the mesh reaches the runtime's management gRPC: port:N or unix:PATH.",
                               pattern=r"^(port:[0-9]{1,5}|unix:.+)$"),
        "grpcDataEndpoint": string("Where the runtime serves V2 inference gRPC: port:N or unix:PATH.",
                                   pattern=r"^(port:[0-9]{1,5}|unix:.+)$"),
        "httpDataEndpoint": string("Where the runtime serves V2 REST, if any: port:N.",
                                   pattern=r"^port:[0-9]{1,5}$"),
        "storageHelper": obj({"disabled": boolean("True when the runtime pulls models itself.")}),
        "builtInAdapter": obj(
            {
                "serverType": string("Which adapter drives the runtime.",
                                     enum=["mlserver", "triton", "ovms", "torchserve"]),
                "runtimeManagementPort": integer("Port of the server's own repository API.",
                                                 minimum=1, maximum=65535),
                "memBufferBytes": integer("Memory kept free for the server itself.", fmt="int64",
                                          minimum=0),
                "modelLoadingTimeoutMillis": integer("Time a load may take.", minimum=1),
                "env": array(ENV_VAR, "Environment of the adapter."),
            },
            "For third-party servers: the mesh talks to them through a built-in adapter.",
        ),
    },
    "ServingRuntimeSpec: what a runtime serves and how its pods look.",
    required=["containers"],
)

RUNTIME_PRINTER_COLUMNS = [
    {"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"},
    {"name": "ModelType", "type": "string", "jsonPath": ".spec.supportedModelFormats[*].name"},
    {"name": "Containers", "type": "string", "jsonPath": ".spec.containers[*].name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

MODEL_STATE = string(enum=["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"])

FAILURE_INFO = obj(
    {
        "reason": string("High-level class of failure.", enum=[
            "ModelLoadFailed", "RuntimeUnhealthy", "NoSupportingRuntime", "RuntimeNotRecognized",
            "InvalidPredictorSpec"]),
        "message": string("What went wrong, in words."),
        "modelId": string("Concrete model id (tied to the spec contents)."),
        "location": string("Where it happened (usually a pod name)."),
        "time": string("When the failure happened or was seen.", format="date-time"),
    },
    "The last failure of the target model.",
)

STORAGE_PATH_SCHEMA = obj(
    {
        "key": string("Entry of the storage-config Secret to use (default: 'default')."),
        "path": string("Path of the model inside the storage; not together with spec.path."),
        "schemaPath": string("Path of the model's schema file inside the storage."),
        "parameters": string_map("Overrides of the storage entry's fields (e.g. bucket)."),
        "s3": obj({"secretKey": string(), "bucket": string()},
                  "(Deprecated) use key and parameters.bucket.", required=["secretKey"]),
        "persistentVolumeClaim": obj({"claimName": string(), "readOnly": boolean()},
                                     "(Deprecated) use a pvc storage entry or a pvc:// path.",
                                     required=["claimName"]),
    },
    "Where the model files are.",
)

PREDICTOR_SPEC = obj(
    {
        "modelType": obj({"name": string(minLength=1), "version": string()},
                         "Model format (name and optional version).", required=["name"]),
        "runtime": obj({"name": string(minLength=1)},
                       "Runtime to use; omit to let the mesh pick one that autoSelects the format.",
                       required=["name"]),
        "path": string("(Deprecated form) path of the model inside the storage."),
        "schemaPath": string("(Deprecated form) path of the schema file."),
        "storage": STORAGE_PATH_SCHEMA,
        "protocolVersion": string(enum=["v2", "grpc-v2", "grpc-v1"]),
        "gpu": string("Absent, preferred or required.", enum=["required", "preferred"]),
        "serviceAccountName": string("Not supported (accepted for compatibility)."),
    },
    "PredictorSpec: one model and where it is.",
    required=["modelType"],
    # Exactly one of spec.path and spec.storage.path (value validations only: still structural).
    # Both present match both branches, so oneOf fails then too.
    oneOf=[
        {"required": ["path"]},
        {"required": ["storage"], "properties": {"storage": {"required": ["path"]}}},
    ],
)

PREDICTOR_STATUS = obj(
    {
        "activeModelState": MODEL_STATE,
        "targetModelState": MODEL_STATE,
        "transitionStatus": string(enum=["UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"]),
        "available": boolean("Whether the predictor's endpoint serves requests."),
        "failedCopies": integer("Copies that failed to load recently.", minimum=0),
        "totalCopies": integer("Copies loaded or loading.", minimum=0),
        "lastFailureInfo": FAILURE_INFO,
        "grpcEndpoint": string(),
        "httpEndpoint": string(),
        "conditions": array(free_form("A condition (type, status, reason, message, lastTransitionTime).")),
    },
    "PredictorStatus: how far the mesh got.",
)

PREDICTOR_PRINTER_COLUMNS = [
    {"name": "Type", "type": "string", "jsonPath": ".spec.modelType.name"},
    {"name": "Available", "type": "boolean", "jsonPath": ".status.available"},
    {"name": "ActiveModel", "type": "string", "jsonPath": ".status.activeModelState"},
    {"name": "TargetModel", "type": "string", "jsonPath": ".status.targetModelState"},
    {"name": "Transition", "type": "string", "jsonPath": ".status.transitionStatus"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


# -- CRDs ----------------------------------------------------------------------------------------


def root_schema(kind: str, spec: Schema, status: Schema, *, spec_required: bool) -> Schema:
    return obj(
        {
            "apiVersion": string(),
            "kind": string(),
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        f"{kind} (serving.kserve.io/v1alpha1).",
        required=["spec"] if spec_required else None,
    )


def crd(kind: str, plural: str, scope: str, schema: Schema, columns: list[dict[str, str]],
        short_names: list[str] | None = None) -> dict[str, Any]:
    names: dict[str, Any] = {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                             "singular": kind.lower()}
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": scope,
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


RUNTIME_STATUS = free_form("Reserved for the controller (currently unused).")


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD object."""
    return {
        f"{GROUP}_servingruntimes.yaml": crd(
            "ServingRuntime", "servingruntimes", "Namespaced",
            root_schema("ServingRuntime", RUNTIME_SPEC, RUNTIME_STATUS, spec_required=True),
            RUNTIME_PRINTER_COLUMNS),
        f"{GROUP}_clusterservingruntimes.yaml": crd(
            "ClusterServingRuntime", "clusterservingruntimes", "Cluster",
            root_schema("ClusterServingRuntime", RUNTIME_SPEC, RUNTIME_STATUS, spec_required=True),
            RUNTIME_PRINTER_COLUMNS),
        f"{GROUP}_predictors.yaml": crd(
            "Predictor", "predictors", "Namespaced",
            root_schema("Predictor", PREDICTOR_SPEC, PREDICTOR_STATUS, spec_required=True),
            PREDICTOR_PRINTER_COLUMNS),
    }


HEADER = "# Generated by manifests/crd/generate.py: edit that file, then run it.\n"


def render(obj_: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(obj_, sort_keys=False, width=100, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write (default: bases/)")
    args = parser.parse_args(argv)
    stale = []
    for name, obj_ in all_crds().items():
        path = args.out / name
        text = render(obj_)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date (run python manifests/crd/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
