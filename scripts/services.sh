#!/usr/bin/env bash
# Start or stop the real services that development and the tests use (cached under .cache/).
#   scripts/services.sh {start|stop|restart|status} {kafka|postgres|all}
# `restart` keeps the data (topics, offsets, transactions, tables): an outage, not a fresh service;
# `start` gives a fresh, empty Kafka broker (PostgreSQL keeps its data either way).
# Uses $PYTHON (default: the checkout's .venv/bin/python, made by `make install`).
set -euo pipefail

usage() { echo "usage: $0 {start|stop|restart|status} {kafka|postgres|all}" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1 target=$2
case $action in start | stop | restart | status) ;; *) usage ;; esac
case $target in
  kafka | postgres) services=("$target") ;;
  all) services=(postgres kafka) ;;
  *) usage ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-.venv/bin/python}
rc=0
for service in "${services[@]}"; do
  "$python" -m "foldline.dev.$service" "$action" || rc=$?
done
exit "$rc"
