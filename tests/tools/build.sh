#!/usr/bin/env bash
# Builds the pinned binaries that the integration and end-to-end tests run: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, Gitea, a test runner, Helm and kustomize, and fetches the ServiceMonitor CRD
# that the Helm chart's test installs. Everything goes to a cache outside the repository, one folder per tool and
# version, so a second run is a no-op. With --print-paths, prints one name=folder line per tool last.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
# Every Gitea version the forge contract tests run against, oldest first; the last is the end-to-end tests' default.
# GITEA_VERSION (one version) is still accepted.
GITEA_VERSIONS="${GITEA_VERSIONS:-${GITEA_VERSION:-v1.26.0 v1.27.3}}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# v5.8 needs Go 1.27.
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE="${GRO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitea-runner-operator/tools}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'tools: %s\n' "$*" >&2; exit 1; }

# Go's default install location, for shells whose PATH lacks it.
command -v go >/dev/null 2>&1 || { [[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"; }
command -v go >/dev/null 2>&1 || die "Go is not installed: install Go >= 1.26 (https://go.dev/dl) and run again"
go version | grep -qE 'go1\.(2[6-9]|[3-9][0-9])' || die "Go >= 1.26 is needed, found: $(go version)"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED="${CGO_ENABLED:-1}"

# net COMMAND...: a step that only downloads (go get, go mod download, go mod tidy). A request to the module proxy can
# hang on an open connection (seen: 9 minutes without a byte, on a cold machine), so each attempt is cut after
# GRO_TOOLS_NET_TIMEOUT seconds (default 600) and run again, up to three times; what an attempt downloaded stays in Go's
# module cache for the next. A command that fails is not retried.
net() {
  local attempt code limit="${GRO_TOOLS_NET_TIMEOUT:-600}"
  for attempt in 1 2 3; do
    timeout --kill-after=10 "$limit" "$@"
    code=$?
    [[ $code -eq 124 || $code -eq 137 ]] || return "$code"
    log "  no end after ${limit}s (attempt $attempt of 3): $*"
  done
  return "$code"
}

# fetch_deps ARG...: in the current folder and with the go build's environment (GOTOOLCHAIN, CGO_ENABLED, tags), downloads
# every module that the packages named in ARG import (and the toolchain that GOTOOLCHAIN names), as a download step
# under net; the go build after it then reads Go's module cache only, so it is not cut, however long it compiles.
fetch_deps() { net go list -deps "$@" >/dev/null; }

# module_dir MODULE@VERSION: downloads a module through the Go module proxy and prints its read-only folder.
module_dir() {
  local out
  out="$(cd "$(mktemp -d)" && net go mod download -json "$1" 2>&1)" ||
    die "cannot download $1 through the Go module proxy ($(go env GOPROXY)): $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"
  printf '%s' "$out" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# done_marker NAME VERSION: the folder for one tool version; a finished build leaves a .done file in it.
tool_dir() { printf '%s/%s-%s' "$CACHE" "$1" "$2"; }

build_etcd() {
  local dir; dir="$(tool_dir etcd "$ETCD_VERSION")"
  [[ -f "$dir/.done" ]] && { log "etcd $ETCD_VERSION cached"; return; }
  log "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3"
  local work; work="$(mktemp -d)"
  printf 'module etcdbuild\n\ngo 1.25\n' >"$work/go.mod"
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >"$work/main.go"
  mkdir -p "$dir"
  (cd "$work" && net go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && net go mod tidy &&
    CGO_ENABLED=0 fetch_deps . && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$dir/etcd" .) || die "etcd build failed"
  touch "$dir/.done"; rm -rf "$work"
}

build_kubernetes() {
  local dir; dir="$(tool_dir kubernetes "$K8S_VERSION")"
  [[ -f "$dir/.done" ]] && { log "kubernetes $K8S_VERSION cached"; return; }
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (cold: 15-30 min on 2 cores)"
  local src work staging minor
  src="$(module_dir "k8s.io/kubernetes@$K8S_VERSION")"
  staging="v0.${K8S_VERSION#v1.}"
  minor="$(printf '%s' "$K8S_VERSION" | cut -d. -f2)"
  work="$(mktemp -d)"
  {
    printf 'module k8sbuild\n\ngo 1.25\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$src/go.mod"
  } >"$work/go.mod"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$dir"
  (cd "$work" && net go get "k8s.io/kubernetes@$K8S_VERSION") || die "cannot resolve k8s.io/kubernetes@$K8S_VERSION"
  (cd "$work" && CGO_ENABLED=0 fetch_deps k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler}) ||
    die "cannot download the modules of kube-apiserver, kube-controller-manager and kube-scheduler $K8S_VERSION"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    log "  go build $cmd"
    (cd "$work" && CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$dir/$cmd" "k8s.io/kubernetes/cmd/$cmd") || die "$cmd build failed"
  done
  touch "$dir/.done"; rm -rf "$work"
}

# version_lt A B: whether Go version A (1.26.8) is older than B (1.27.3).
version_lt() { [[ "$1" != "$2" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" == "$1" ]]; }

# go_toolchain_for GO_MOD: "local" when the installed Go is new enough for a module's go (and toolchain) directive,
# else the toolchain it asks for, which Go then fetches through the module proxy for that one build.
go_toolchain_for() {
  local need have toolchain
  need="$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$1")"
  toolchain="$(sed -n 's/^toolchain go\([0-9][0-9.]*\)$/\1/p' "$1")"
  [[ -n "$toolchain" ]] && version_lt "$need" "$toolchain" && need="$toolchain"
  [[ "$need" =~ ^[0-9]+\.[0-9]+$ ]] && need="$need.0" # "go 1.26" means 1.26.0
  have="$(go env GOVERSION)"
  have="${have#go}"
  if [[ -n "$need" ]] && version_lt "${have%%[!0-9.]*}" "$need"; then printf 'go%s' "$need"; else printf 'local'; fi
}

# go_sum_hash DIR NAME@VERSION: the go.sum hash ("h1:", golang.org/x/mod/sumdb/dirhash Hash1) of the files in DIR
# published as module NAME at VERSION: a SHA-256 over "<sha256 of file>  NAME@VERSION/<file>" lines sorted by name.
go_sum_hash() {
  local summary
  summary="$(cd "$1" && find . -type f | sed 's#^\./##' | LC_ALL=C sort | while IFS= read -r file; do
    printf '%s  %s/%s\n' "$(sha256sum "$file" | cut -c1-64)" "$2" "$file"
  done | sha256sum | cut -c1-64)"
  # Hex to bytes to base64 without xxd.
  printf "h1:%s" "$(printf "$(sed 's/../\\x&/g' <<<"$summary")" | base64)"
}

# use_code_gitea_io_mirrors SRC: Gitea 1.27 moved its module path and its own modules from code.gitea.io to gitea.dev,
# a host the module proxy here does not serve, while it serves the same repositories under their old code.gitea.io
# paths (their go.mod already says gitea.dev/...). Each gitea.dev requirement is replaced by its code.gitea.io twin,
# but only after checking that the twin's files hash to exactly what Gitea's go.sum pins for the gitea.dev module;
# the twin's own go.sum lines are then added, so the build verifies every module against go.sum as usual.
use_code_gitea_io_mirrors() {
  local src="$1" name version json twin_dir twin_sum twin_mod_sum pinned actual
  while read -r name version; do
    pinned="$(awk -v m="gitea.dev/$name" -v v="$version" '$1 == m && $2 == v {print $3}' "$src/go.sum")"
    [[ -n "$pinned" ]] || die "Gitea's go.sum has no hash for gitea.dev/$name $version"
    # The checksum database may not know the twin: the hash comparison below stands in for it.
    json="$(cd "$(mktemp -d)" && GONOSUMDB="code.gitea.io/$name" net go mod download -json "code.gitea.io/$name@$version" 2>&1)" ||
      die "cannot download code.gitea.io/$name@$version for gitea.dev/$name: $(tr '\n' ' ' <<<"$json" | cut -c1-300)"
    twin_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")"
    twin_sum="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$json")"
    twin_mod_sum="$(sed -n 's/^[[:space:]]*"GoModSum": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
    actual="$(go_sum_hash "$twin_dir" "gitea.dev/$name@$version")"
    [[ "$actual" == "$pinned" ]] ||
      die "code.gitea.io/$name@$version is not gitea.dev/$name@$version: its files hash to $actual, Gitea's go.sum pins $pinned"
    log "  gitea.dev/$name $version from code.gitea.io/$name (same files: $pinned)"
    printf '\nreplace gitea.dev/%s => code.gitea.io/%s %s\n' "$name" "$name" "$version" >>"$src/go.mod"
    printf 'code.gitea.io/%s %s %s\ncode.gitea.io/%s %s/go.mod %s\n' \
      "$name" "$version" "$twin_sum" "$name" "$version" "$twin_mod_sum" >>"$src/go.sum"
  done < <(sed -n 's#^[[:space:]]*gitea\.dev/\([^[:space:]]*\) \(v[^[:space:]]*\).*#\1 \2#p' "$src/go.mod")
}

build_gitea() {
  local version="$1" dir; dir="$(tool_dir gitea "$version")"
  [[ -f "$dir/.done" ]] && { log "gitea $version cached"; return; }
  log "building gitea $version (tags sqlite sqlite_unlock_notify; cold: 5-15 min)"
  local src; src="$(module_dir "code.gitea.io/gitea@$version")"
  mkdir -p "$dir"
  rm -rf "$dir/src"; cp -r "$src" "$dir/src"; chmod -R u+w "$dir/src"
  use_code_gitea_io_mirrors "$dir/src"
  local toolchain; toolchain="$(go_toolchain_for "$dir/src/go.mod")"
  [[ "$toolchain" == local ]] || log "  with GOTOOLCHAIN=$toolchain (Gitea's go.mod asks for it)"
  (cd "$dir/src" && GOTOOLCHAIN="$toolchain" GOFLAGS=-mod=mod fetch_deps -tags 'sqlite sqlite_unlock_notify' .) ||
    die "cannot download gitea $version's modules"
  (cd "$dir/src" && GOTOOLCHAIN="$toolchain" GOFLAGS=-mod=mod go build -tags 'sqlite sqlite_unlock_notify' \
    -ldflags "-s -w -X main.Version=${version#v} -X main.Tags=sqlite" -o "$dir/gitea" .) || die "gitea $version build failed"
  # Templates and options are read from the source tree at run time (no bindata); keep only what Gitea reads.
  find "$dir/src" -mindepth 1 -maxdepth 1 ! -name templates ! -name options ! -name public -exec rm -rf {} +
  touch "$dir/.done"
}

build_helm() {
  local dir; dir="$(tool_dir helm "$HELM_VERSION")"
  [[ -f "$dir/.done" ]] && { log "helm $HELM_VERSION cached"; return; }
  log "building helm $HELM_VERSION from helm.sh/helm/v3"
  local work; work="$(mktemp -d)"
  printf 'module helmbuild\n\ngo 1.26\n' >"$work/go.mod"
  mkdir -p "$dir"
  (cd "$work" && net go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") || die "cannot resolve helm.sh/helm/v3@$HELM_VERSION"
  # As Helm's Makefile does: the version, and the Kubernetes version that `helm template` and `helm lint` assume,
  # taken from the client-go release Helm is built with (v0.X.Y is Kubernetes 1.X).
  local client_go minor ldflags="-s -w"
  client_go="$(cd "$work" && go list -m -f '{{.Version}}' k8s.io/client-go)" || die "cannot read helm's client-go version"
  minor="$(printf '%s' "$client_go" | cut -d. -f2)"
  ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  (cd "$work" && CGO_ENABLED=0 fetch_deps helm.sh/helm/v3/cmd/helm) || die "cannot download helm $HELM_VERSION's modules"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/helm" helm.sh/helm/v3/cmd/helm) ||
    die "helm build failed"
  touch "$dir/.done"; rm -rf "$work"
}

build_kustomize() {
  local dir; dir="$(tool_dir kustomize "$KUSTOMIZE_VERSION")"
  [[ -f "$dir/.done" ]] && { log "kustomize $KUSTOMIZE_VERSION cached"; return; }
  log "building kustomize $KUSTOMIZE_VERSION from sigs.k8s.io/kustomize/kustomize/v5"
  local work; work="$(mktemp -d)"
  printf 'module kustomizebuild\n\ngo 1.26\n' >"$work/go.mod"
  mkdir -p "$dir"
  (cd "$work" && net go get "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION") ||
    die "cannot resolve sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  (cd "$work" && CGO_ENABLED=0 fetch_deps sigs.k8s.io/kustomize/kustomize/v5) ||
    die "cannot download kustomize $KUSTOMIZE_VERSION's modules"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$KUSTOMIZE_VERSION" \
    -o "$dir/kustomize" sigs.k8s.io/kustomize/kustomize/v5) || die "kustomize build failed"
  touch "$dir/.done"; rm -rf "$work"
}

build_prometheus_crds() {
  # Only the ServiceMonitor CRD, so that the Helm chart's ServiceMonitor can be created in the test cluster.
  local dir; dir="$(tool_dir prometheus-operator-crds "$PROMETHEUS_OPERATOR_VERSION")"
  [[ -f "$dir/.done" ]] && { log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION cached"; return; }
  log "fetching the ServiceMonitor CRD of prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  local src file=monitoring.coreos.com_servicemonitors.yaml
  src="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
  [[ -f "$src/example/prometheus-operator-crd/$file" ]] || die "prometheus-operator $PROMETHEUS_OPERATOR_VERSION has no $file"
  mkdir -p "$dir"
  cp "$src/example/prometheus-operator-crd/$file" "$dir/$file"; chmod u+w "$dir/$file"
  touch "$dir/.done"
}

runner_hash() { cat "$HERE/../harness/runner/"*.go "$HERE/../harness/runner/go."* | sha256sum | cut -c1-12; }

build_runner() {
  # The Gitea runner's module is not served by the module proxy reachable here; tests/harness/runner is a small
  # runner that speaks Gitea's real runner protocol (code.gitea.io/actions-proto-go). Keyed by its source hash.
  local hash dir
  hash="$(runner_hash)"
  dir="$(tool_dir test-runner "$hash")"
  [[ -f "$dir/.done" ]] && { log "test runner $hash cached"; return; }
  log "building test runner $hash"
  mkdir -p "$dir"
  (cd "$HERE/../harness/runner" && CGO_ENABLED=0 fetch_deps .) || die "cannot download the test runner's modules"
  (cd "$HERE/../harness/runner" && CGO_ENABLED=0 go build -o "$dir/test-runner" .) || die "test runner build failed"
  touch "$dir/.done"
}

mkdir -p "$CACHE"
start=$SECONDS
print_paths=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --print-paths) print_paths=1 ;;
    etcd | gitea | runner | kubernetes | helm | kustomize | prometheus_crds) targets+=("$arg") ;;
    *) die "unknown tool \"$arg\": expected etcd, gitea, runner, kubernetes, helm, kustomize, prometheus_crds or --print-paths" ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(etcd gitea runner kubernetes helm kustomize prometheus_crds)
for t in "${targets[@]}"; do
  if [[ "$t" == gitea ]]; then
    for version in $GITEA_VERSIONS; do build_gitea "$version"; done
  else
    "build_$t"
  fi
done
log "tools ready in $((SECONDS - start))s under $CACHE"
if ((print_paths)); then
  printf 'etcd=%s\nkubernetes=%s\ntest-runner=%s\n' "$(tool_dir etcd "$ETCD_VERSION")" \
    "$(tool_dir kubernetes "$K8S_VERSION")" "$(tool_dir test-runner "$(runner_hash)")"
  # One line per Gitea version, oldest first: gitea-v1.26.0=<folder>.
  for version in $GITEA_VERSIONS; do printf 'gitea-%s=%s\n' "$version" "$(tool_dir gitea "$version")"; done
  printf 'helm=%s\nkustomize=%s\nprometheus-operator-crds=%s\n' "$(tool_dir helm "$HELM_VERSION")" \
    "$(tool_dir kustomize "$KUSTOMIZE_VERSION")" "$(tool_dir prometheus-operator-crds "$PROMETHEUS_OPERATOR_VERSION")"
fi
