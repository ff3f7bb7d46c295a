#!/usr/bin/env bash
# Installs what a fresh machine lacks: Java and Maven (for the Kafka broker's jars), PostgreSQL, Go,
# openssl, Chromium and kcat from Debian's packages; foldline and its development tools into this
# checkout's own virtual environment (.venv), never into the machine's Python; then the builds the tests need (the control
# plane from Go modules; the one-node cluster's binaries, Helm and images), with progress output, so
# that no test ever waits on a build.
# Safe to run again: it only installs and builds what is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
VENV=${FOLDLINE_VENV:-.venv}
BASE_PYTHON=${BASE_PYTHON:-python3}

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || need_apt+=(golang-go)
command -v openssl >/dev/null || need_apt+=(openssl)
# The console's browser test drives Debian's Chromium through Selenium.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# promtool checks and unit-tests the alert rules; the observability test runs a real Prometheus.
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need_apt+=(prometheus)
# The poison suite produces bad records with a client foldline did not write.
command -v kcat >/dev/null || need_apt+=(kcat)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

mkdir -p .cache
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating the virtual environment $VENV"
  "$BASE_PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
stamp="$VENV/.foldline-installed"
# The package must import from this checkout: a venv copied from elsewhere, or an editable install
# that points at another clone, is reinstalled.
where=$("$py" -c 'import foldline, foldline_operator, os; print(os.path.realpath(foldline.__file__))' 2>/dev/null || true)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$where" != "$top/services/foldline/__init__.py" ]; then
  echo "bootstrap: installing foldline and its development tools into $VENV"
  "$py" -m pip install --disable-pip-version-check -q --upgrade pip
  "$py" -m pip install --disable-pip-version-check -q -e '.[dev]'
  where=$("$py" -c 'import foldline, os; print(os.path.realpath(foldline.__file__))')
  if [ "$where" != "$top/services/foldline/__init__.py" ]; then
    echo "bootstrap: ERROR: $VENV imports foldline from $where, not from this checkout" >&2
    exit 1
  fi
  touch "$stamp"
fi

# Builds the tests need, outside any test's timeout (cached under .cache/; a no-op when current).
scripts/envtest.sh build
scripts/cluster.sh build   # the one-node cluster's binaries, Helm and images; Debian packages it lacks

# The container image and the team example (.cache/images/), built daemonless; a no-op when current.
scripts/image.sh build
