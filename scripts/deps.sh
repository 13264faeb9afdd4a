#!/usr/bin/env bash
# Install what building and testing Oakestra needs on a fresh Debian/Ubuntu machine.
set -euo pipefail
packages=(
  protobuf-compiler            # the containerd gRPC client is generated at build time
  etcd-server etcd-client      # the etcd store and its tests
  curl
  python3 python3-venv         # the example services serve HTTP with http.server; the
                               # official Kubernetes Python client's tests
  containerd runc              # the containerd runtime
  containernetworking-plugins  # per-container network namespaces (CNI bridge + static)
  iproute2 nftables conntrack   # the node's service rules and overlay (nft, ip, bridge)
  docker-registry skopeo umoci busybox-static  # a local registry and test images
  chromium chromium-driver     # the dashboard's browser test (headless, driven by Selenium)
)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from rustup first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The official Kubernetes Python client, for the tests that drive the API with it, and
# Selenium, for the dashboard's browser test (it drives Debian's chromium through
# chromium-driver, above: nothing is downloaded at run time), in a virtual environment
# of its own (Debian's python3 takes no system-wide pip installs).
PY_ENV=${OAKESTRA_PYTHON_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oakestra/python}
if ! "$PY_ENV/bin/python" -c 'import kubernetes, selenium' 2>/dev/null; then
  echo "installing the kubernetes Python client and Selenium in $PY_ENV"
  python3 -m venv "$PY_ENV"
  "$PY_ENV/bin/pip" install -q 'kubernetes==31.0.0' 'selenium==4.51.0'
fi

# Oakestra's own CLI (`oak`, the oak-cli package), for e2e/tests/oak_cli.rs, in a virtual
# environment apart from the Kubernetes client's (its dependencies, ansible among them,
# must not change that client's).
OAK_ENV=${OAKESTRA_OAK_CLI_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oakestra/oak-cli}
if ! "$OAK_ENV/bin/pip" show -q oak-cli >/dev/null 2>&1; then
  echo "installing Oakestra's CLI (oak-cli) in $OAK_ENV"
  python3 -m venv "$OAK_ENV"
  "$OAK_ENV/bin/pip" install -q 'oak-cli==0.5.5'
fi
