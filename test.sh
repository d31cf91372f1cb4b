#!/usr/bin/env bash
# Set up fcnkit with its test dependencies and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt -e .
python3 -m pytest -q -n "${PYTEST_WORKERS:-2}" tests "$@"
