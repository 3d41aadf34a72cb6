#!/usr/bin/env bash
# Build every wheel the image installs into images/wheelhouse/ on the host, for docker builds
# whose containers cannot reach PyPI: `docker build --build-arg WHEELHOUSE=images/wheelhouse`
# then installs with `pip install --no-index` from these files only. The fedprune wheel is built
# from this working tree; torch comes from wherever the host's pip finds torch==2.13.0 (the CPU
# wheel on this project's machines; the Dockerfile's build checks that it is the CPU build).
#
#   images/wheelhouse.sh [PYTHON]     (default .venv/bin/python; must be CPython 3.11 on Linux)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
rm -rf images/wheelhouse
"$python" -m pip wheel --quiet --wheel-dir images/wheelhouse '.[kubeflow,server]'
ls images/wheelhouse | wc -l | xargs echo "wheels:"
du -sh images/wheelhouse
