#!/usr/bin/env bash
# Installs tilecraft and what it needs on a CPU-only machine (Python 3.11).
# torch==2.13.0 is the CPU build; Triton 3.6.0's interpreter needs numpy < 2.4. pyproject.toml brings the rest:
# xgboost-cpu (imported as `xgboost`), networkx, tqdm; the test extra adds pytest, transformers and matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check "torch==2.13.0" "triton==3.6.0" "numpy<2.4" -e ".[test]" 2>&1 \
  | grep -v -e "is ignored: it is neither" -e "Running pip as the 'root'" || true
python3 -c "import tilecraft, torch, triton, numpy, xgboost; print(f'tilecraft {tilecraft.__version__}: torch {torch.__version__}, triton {triton.__version__}, numpy {numpy.__version__}, xgboost {xgboost.__version__}')"
