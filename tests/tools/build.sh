#!/usr/bin/env bash
# Builds the pinned binaries that the integration and end-to-end tests run: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, Gitea and a test runner. Binaries go to a cache outside the repository,
# one folder per tool and version, so a second run is a no-op. Prints the cache's bin folder last.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
GITEA_VERSION="${GITEA_VERSION:-v1.26.0}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
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

# module_dir MODULE@VERSION: downloads a module through the Go module proxy and prints its read-only folder.
module_dir() {
  local out
  out="$(cd "$(mktemp -d)" && go mod download -json "$1" 2>&1)" ||
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
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy &&
    CGO_ENABLED=0 go build -ldflags "-s -w" -o "$dir/etcd" .) || die "etcd build failed"
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
  (cd "$work" && go get "k8s.io/kubernetes@$K8S_VERSION") || die "cannot resolve k8s.io/kubernetes@$K8S_VERSION"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    log "  go build $cmd"
    (cd "$work" && CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$dir/$cmd" "k8s.io/kubernetes/cmd/$cmd") || die "$cmd build failed"
  done
  touch "$dir/.done"; rm -rf "$work"
}

build_gitea() {
  local dir; dir="$(tool_dir gitea "$GITEA_VERSION")"
  [[ -f "$dir/.done" ]] && { log "gitea $GITEA_VERSION cached"; return; }
  log "building gitea $GITEA_VERSION (tags sqlite sqlite_unlock_notify; cold: 5-15 min)"
  local src; src="$(module_dir "code.gitea.io/gitea@$GITEA_VERSION")"
  mkdir -p "$dir"
  rm -rf "$dir/src"; cp -r "$src" "$dir/src"; chmod -R u+w "$dir/src"
  (cd "$dir/src" && GOFLAGS=-mod=mod go build -tags 'sqlite sqlite_unlock_notify' \
    -ldflags "-s -w -X main.Version=${GITEA_VERSION#v} -X main.Tags=sqlite" -o "$dir/gitea" .) || die "gitea build failed"
  # Templates and options are read from the source tree at run time (no bindata); keep only what Gitea reads.
  find "$dir/src" -mindepth 1 -maxdepth 1 ! -name templates ! -name options ! -name public -exec rm -rf {} +
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
    etcd | gitea | runner | kubernetes) targets+=("$arg") ;;
    *) die "unknown tool \"$arg\": expected etcd, gitea, runner, kubernetes or --print-paths" ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(etcd gitea runner kubernetes)
for t in "${targets[@]}"; do "build_$t"; done
log "tools ready in $((SECONDS - start))s under $CACHE"
if ((print_paths)); then
  printf 'etcd=%s\nkubernetes=%s\ngitea=%s\ntest-runner=%s\n' "$(tool_dir etcd "$ETCD_VERSION")" \
    "$(tool_dir kubernetes "$K8S_VERSION")" "$(tool_dir gitea "$GITEA_VERSION")" "$(tool_dir test-runner "$(runner_hash)")"
fi
