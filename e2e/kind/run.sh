#!/usr/bin/env bash
# The end-to-end scenario on kind (docs/e2e.md): builds the images, creates a kind cluster (reused when it
# exists), gives its worker nodes fake nvidia.com/gpu capacity, loads the images and runs e2e/test_kind.py,
# the same scenario as on the local control plane. Needs docker, kind, kubectl and helm on PATH, and internet
# (the base images and kind's node image). Exits 2 naming what is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="${WARMSERVE_KIND_CLUSTER:-warmserve-e2e}"
gpus_per_node="${WARMSERVE_KIND_GPUS:-4}"

missing=()
for tool in docker kind kubectl helm; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
    echo "run.sh: not installed: ${missing[*]} (the kind path needs docker, kind, kubectl and helm)" >&2
    exit 2
fi

version="$(cd "$repo" && python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
if ! kind get clusters | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 180s
fi
context="kind-$cluster"

for target in operator gateway worker; do
    docker build -f "$repo/images/Dockerfile" --target "$target" -t "warmserve/$target:$version" "$repo"
    kind load docker-image --name "$cluster" "warmserve/$target:$version"
done

# Fake GPUs: an extended resource advertised on each worker node's status (the way a device plugin would),
# so worker Pods asking for nvidia.com/gpu are scheduled as on a GPU cluster; the fake engine uses none.
for node in $(kubectl --context "$context" get nodes -l '!node-role.kubernetes.io/control-plane' -o name); do
    kubectl --context "$context" patch "$node" --subresource=status --type=json \
        -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$gpus_per_node\"}]"
done
kubectl --context "$context" apply --server-side -f "$repo/crds/"

cd "$repo"
WARMSERVE_KIND_CONTEXT="$context" WARMSERVE_IMAGE_TAG="$version" \
    python3 -m pytest e2e/test_kind.py -s -p no:cacheprovider "$@"
