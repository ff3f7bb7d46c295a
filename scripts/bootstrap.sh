#!/usr/bin/env bash
# Installs what a fresh machine lacks: Java and Maven (for the Kafka broker's jars), PostgreSQL, and
# foldline itself with its development tools. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v go >/dev/null || need_apt+=(golang-go)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

stamp=.cache/bootstrap.stamp
mkdir -p .cache
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! $PYTHON -c 'import foldline, foldline_operator' 2>/dev/null; then
  $PYTHON -m pip install --disable-pip-version-check -q -e '.[dev]'
  touch "$stamp"
fi
