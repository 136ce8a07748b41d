#!/usr/bin/env bash
# Idempotent set-up: Debian libraries (when root with apt), a virtual environment in .venv,
# PyTorch (CPU build from local disk where available) and the project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# EGL/Mesa for offscreen rendering, Chromium for the browser test. Installed only when missing.
DEB_PKGS="libegl1 libgl1 chromium"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=""
  for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install$missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "[setup] warning: could not install$missing; rendering/browser tests will be skipped"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
STAMP=.venv/.installed-$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  echo "[setup] installing requirements"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements.txt
  # packages whose declared dependencies we deliberately skip (see requirements.txt)
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.installed-* && touch "$STAMP"
fi

# The Human mesh recovery page's body model builds a cache once per machine (about two minutes on 2 cores),
# and the page's default view (test set, first sample's fits) is computed ahead into ~/.cache/lsr1_explorer:
# both here, so that the page's first visit takes seconds. Skipped at once when nothing they depend on changed.
ANNY_CACHE="${ANNY_CACHE_DIR:-$HOME/.cache/anny}"
# (the files explorer.hmr_cache's SOURCE_GLOBS names, less NOT_SOURCES, its EXPLORER_SOURCES, the checkpoints' cards)
HMR_SOURCES=$(ls lsr1_core/{checkpoints,device,operators,trace}.py lsr1_core/{hmr,learned,solvers,objectives}/*.py \
  lsr1_core/viz/{hmr,palette}.py explorer/hmr_{cache,prepare}.py 2>/dev/null | grep -v -E 'hmr/(formats|smpl|train)\.py$')
HMR_STAMP=.venv/.hmr-prepared-$(cat $HMR_SOURCES pretrained/hmr_*.json 2>/dev/null | sha1sum | cut -c1-12)
if [ ! -f "$HMR_STAMP" ] || ! { ls "$ANNY_CACHE"/v*/load_data_*.safetensors \
       && ls "$ANNY_CACHE"/v*/build_model_data_*.safetensors \
       && ls "$ANNY_CACHE"/v*/build_compact_model_data_*.safetensors; } >/dev/null 2>&1; then
  if OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python -m explorer.hmr_prepare; then
    rm -f .venv/.hmr-prepared-* && touch "$HMR_STAMP"
  else
    echo "[setup] warning: the HMR page's caches could not be built; the page will build them on first visit"
  fi
fi
