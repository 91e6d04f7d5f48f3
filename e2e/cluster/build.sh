#!/usr/bin/env bash
# Builds the test control plane from source into a cache outside the repo, keyed by version:
#   kube-apiserver, kube-scheduler, kube-controller-manager, kubectl (e2e/cluster/kube/go.mod),
#   etcd (e2e/cluster/etcd/go.mod) and helm (go install helm.sh/helm/v4/cmd/helm@HELM_VERSION).
# A version whose binaries are all present is skipped, so a second run takes seconds. The last line printed
# is the directory the harness reads (one subdirectory per component and version). See docs/test-cluster.md.
set -euo pipefail

# The versions, in one place (the Go modules pin the same Kubernetes and etcd versions).
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
HELM_VERSION=v4.3.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${WARMSERVE_CLUSTER_CACHE:-$HOME/.cache/warmserve/cluster}"

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: Go is not installed (need Go >= 1.26 on PATH to build the test control plane)" >&2
    exit 2
fi

# One build at a time per cache: a second run (another checkout, a parallel job) waits for the first and then
# finds the binaries there, instead of racing it for the same temporary folders.
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9

have_all() { local dir=$1; shift; for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done; }

k8s_dir="$cache/k8s-$K8S_VERSION"
if ! have_all "$k8s_dir" kube-apiserver kube-scheduler kube-controller-manager kubectl; then
    echo "build.sh: building Kubernetes $K8S_VERSION into $k8s_dir (cold: about 10 minutes on 2 cores)" >&2
    mkdir -p "$k8s_dir.tmp"
    v=k8s.io/component-base/version
    (cd "$here/kube" && go build -trimpath \
        -ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=37" \
        -o "$k8s_dir.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
    rm -rf "$k8s_dir" && mv "$k8s_dir.tmp" "$k8s_dir"
fi

etcd_dir="$cache/etcd-$ETCD_VERSION"
if ! have_all "$etcd_dir" etcd; then
    echo "build.sh: building etcd $ETCD_VERSION into $etcd_dir" >&2
    mkdir -p "$etcd_dir.tmp"
    (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$etcd_dir.tmp/etcd" go.etcd.io/etcd/server/v3)
    rm -rf "$etcd_dir" && mv "$etcd_dir.tmp" "$etcd_dir"
fi

helm_dir="$cache/helm-$HELM_VERSION"
if ! have_all "$helm_dir" helm; then
    echo "build.sh: building helm $HELM_VERSION into $helm_dir" >&2
    mkdir -p "$helm_dir.tmp"
    GOBIN="$helm_dir.tmp" go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    rm -rf "$helm_dir" && mv "$helm_dir.tmp" "$helm_dir"
fi

# The harness reads these; kubectl and helm are here for humans too.
cat > "$cache/versions.env" <<VERSIONS
K8S_BIN=$k8s_dir
ETCD_BIN=$etcd_dir
HELM_BIN=$helm_dir
VERSIONS
echo "$k8s_dir"
echo "$etcd_dir"
echo "$helm_dir"
