#!/usr/bin/env bash
# Set up fcnkit and run its main job on the embedded default: synthetic shapes data, a width-scaled
# FCN trained 32s -> 16s -> 8s on the CPU; mean IU per stage, snapshots and overlays under ./demo/.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q --disable-pip-version-check -r requirements.txt -e .
python3 solve.py "$@"
