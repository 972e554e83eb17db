#!/usr/bin/env bash
# kserve-mesh quickstart: install everything into the namespace kserve-mesh of the cluster that
# kubectl points at (manifests/overlays/quickstart), then wait until the example model serves.
#
#   scripts/quickstart.sh [--dry-run] [--timeout SECONDS] [--context NAME]
#
#   --dry-run          print what would be applied (the rendered YAML) and the steps; touch nothing
#   --timeout SECONDS  give up waiting after this long in all (default 900)
#   --context NAME     the kubeconfig context to use (default: the current one)
#
# Steps: (1) the CRDs (ServingRuntime, ClusterServingRuntime, Predictor; a minimal
# InferenceService CRD only when the cluster has none, i.e. no KServe), waited for until
# Established; (2) everything else in one `kubectl apply`; (3) bounded waits: etcd, MinIO, the Job
# that uploads the example models, the controller, the runtime Deployment the controller creates,
# and the example InferenceService's PredictorReady condition. On a timeout it prints the pods and
# recent events of the namespace and exits 1. Needs kubectl >= 1.27 (kustomize v5) and a default
# StorageClass (etcd and MinIO claim 2 GiB and 1 GiB). The images: kserve-mesh:<version> must be
# pullable by the cluster (see manifests/README.md: load it into kind, or push it and set it
# with `kustomize edit set image` in manifests/overlays/quickstart).
# Environment: KUBECTL (the kubectl to run), KUBECTL_APPLY_ARGS (extra arguments of every
# `kubectl apply`, e.g. --server-side).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OVERLAY="$ROOT/manifests/overlays/quickstart"
NAMESPACE=kserve-mesh
ISVC=example-sklearn-isvc
RUNTIME_DEPLOYMENT=modelmesh-serving-kserve-mesh-python
KUBECTL="${KUBECTL:-kubectl}"
read -r -a APPLY_ARGS <<< "${KUBECTL_APPLY_ARGS:-}"
DRY_RUN=false
TIMEOUT=900
CONTEXT=()

die() { echo "quickstart: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=true ;;
    --timeout)
      [ $# -ge 2 ] || die "--timeout needs a number of seconds"
      [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a whole number of seconds > 0, got '$2'"
      TIMEOUT="$2"; shift ;;
    --context)
      [ $# -ge 2 ] && [ -n "$2" ] || die "--context needs a context name"
      CONTEXT=(--context "$2"); shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

command -v "$KUBECTL" >/dev/null 2>&1 || die "kubectl not found (set KUBECTL, or install kubectl >= 1.27)"
k() { "$KUBECTL" "${CONTEXT[@]}" "$@"; }

RENDERED="$(mktemp -t kserve-mesh-quickstart.XXXXXX.yaml)"
trap 'rm -f "$RENDERED"' EXIT
"$KUBECTL" kustomize "$OVERLAY" > "$RENDERED" || die "kubectl kustomize $OVERLAY failed"

if $DRY_RUN; then
  echo "# quickstart --dry-run: nothing is applied. The steps would be:"
  echo "#  1. kubectl apply -k manifests/crd (and -k manifests/overlays/quickstart/inferenceservice-crd"
  echo "#     when the cluster has no inferenceservices.serving.kserve.io CRD); wait until Established"
  echo "#  2. kubectl apply -f <the objects below> (namespace $NAMESPACE)"
  echo "#  3. wait (${TIMEOUT}s in all): statefulset/kserve-mesh-etcd, deployment/minio,"
  echo "#     job/kserve-mesh-quickstart-models, deployment/kserve-mesh-controller,"
  echo "#     deployment/$RUNTIME_DEPLOYMENT, inferenceservice/$ISVC PredictorReady"
  echo "# Objects of manifests/overlays/quickstart:"
  cat "$RENDERED"
  exit 0
fi

DEADLINE=$(( $(date +%s) + TIMEOUT ))
left() {  # seconds left before the deadline (at least 1)
  local n=$(( DEADLINE - $(date +%s) ))
  [ "$n" -gt 0 ] && echo "$n" || echo 1
}
diagnose() {
  echo "quickstart: $1" >&2
  echo "--- pods in $NAMESPACE ---" >&2
  k -n "$NAMESPACE" get pods -o wide >&2 || true
  echo "--- recent events in $NAMESPACE ---" >&2
  k -n "$NAMESPACE" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 25 >&2 || true
  exit 1
}
step() { echo "quickstart: $*"; }

k version --request-timeout=15s >/dev/null 2>&1 \
  || die "cannot reach the cluster with kubectl${CONTEXT[*]:+ ${CONTEXT[*]}} (check KUBECONFIG / the context)"

step "1/3 CRDs"
k apply "${APPLY_ARGS[@]}" -k "$ROOT/manifests/crd"
if ! k get customresourcedefinition inferenceservices.serving.kserve.io >/dev/null 2>&1; then
  step "no InferenceService CRD (KServe is not installed): applying a minimal one"
  k apply "${APPLY_ARGS[@]}" -k "$OVERLAY/inferenceservice-crd"
fi
k wait --for=condition=Established --timeout="$(left)s" \
  customresourcedefinition/servingruntimes.serving.kserve.io \
  customresourcedefinition/clusterservingruntimes.serving.kserve.io \
  customresourcedefinition/predictors.serving.kserve.io \
  customresourcedefinition/inferenceservices.serving.kserve.io \
  || diagnose "the CRDs were not established in time"

step "2/3 applying manifests/overlays/quickstart to namespace $NAMESPACE"
k apply "${APPLY_ARGS[@]}" -f "$RENDERED"

step "3/3 waiting (at most ${TIMEOUT}s in all)"
k -n "$NAMESPACE" rollout status statefulset/kserve-mesh-etcd --timeout="$(left)s" || diagnose "etcd is not ready"
k -n "$NAMESPACE" rollout status deployment/minio --timeout="$(left)s" || diagnose "MinIO is not ready"
k -n "$NAMESPACE" wait --for=condition=complete job/kserve-mesh-quickstart-models --timeout="$(left)s" \
  || diagnose "the example models were not uploaded (kubectl -n $NAMESPACE logs job/kserve-mesh-quickstart-models --all-containers)"
k -n "$NAMESPACE" rollout status deployment/kserve-mesh-controller --timeout="$(left)s" \
  || diagnose "the controller is not ready"
step "waiting for the controller to create deployment/$RUNTIME_DEPLOYMENT"
until k -n "$NAMESPACE" get deployment "$RUNTIME_DEPLOYMENT" >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$DEADLINE" ] || diagnose "the controller made no runtime Deployment (kubectl -n $NAMESPACE logs deploy/kserve-mesh-controller)"
  sleep 3
done
k -n "$NAMESPACE" rollout status "deployment/$RUNTIME_DEPLOYMENT" --timeout="$(left)s" \
  || diagnose "the runtime pods are not ready"
k -n "$NAMESPACE" wait --for=condition=PredictorReady "inferenceservice/$ISVC" --timeout="$(left)s" \
  || diagnose "the example model did not load (kubectl -n $NAMESPACE describe isvc $ISVC)"

step "ready: inferenceservice/$ISVC serves. Try it:"
cat <<EOF
  kubectl -n $NAMESPACE port-forward service/modelmesh-serving 8008:8008 &
  TOKEN=\$(kubectl -n $NAMESPACE get secret modelmesh-serving-auth -o jsonpath='{.data.infer-token}' | base64 -d)
  curl -s -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    http://127.0.0.1:8008/v2/models/$ISVC/infer \\
    -d '{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [6.8, 2.8, 4.8, 1.4]}]}'
EOF
