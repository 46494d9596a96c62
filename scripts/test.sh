#!/usr/bin/env bash
# Runs every weir test. Installs what the tests need when it is missing, or stops with what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null || need_apt+=(git)
# The analysis provider tests run a real Prometheus on data that promtool builds (both from this package).
{ command -v prometheus && command -v promtool; } >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing: ${need_apt[*]} (install with: sudo apt-get install -y ${need_apt[*]})" >&2
    exit 1
  fi
fi

# The kubectl tests drive the real kubectl binary (v1.32 when the machine has it).
if ! command -v kubectl >/dev/null && ! [ -x /usr/lib/google-cloud-sdk/bin/kubectl.1.32 ]; then
  echo "missing: kubectl v1.32 (install the 'kubectl' package, or put kubectl on PATH, or set WEIR_KUBECTL)" >&2
  exit 1
fi

cargo test --all-targets --no-fail-fast "$@"
