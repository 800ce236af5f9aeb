#!/usr/bin/env bash
# Index the example export shipped in examples/ and check three photos against it.
# Uses the real ResNet-50 weights when they are cached or can be downloaded; on a
# machine that can do neither, falls back to random weights (see the note it prints).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-demo}"  # the light install `make demo` makes (no PyTorch)
DUPECHECK="$VENV/bin/dupecheck"
export DUPECHECK_INDEX="${DUPECHECK_INDEX:-$PWD/.cache/demo-index}"
check_args=()

if [ -z "${DUPECHECK_WEIGHTS:-}" ]; then
  if ! "$VENV/bin/python" - <<'PY'
import sys
from dupecheck.engines import get_model_spec
from dupecheck.engines.weights import resolve_weights
from dupecheck.errors import WeightsUnavailable
try:
    resolve_weights(get_model_spec("resnet50"))  # the cache, else a download
except WeightsUnavailable as exc:
    print(f"note: {exc}", file=sys.stderr)
    sys.exit(1)
PY
  then
    echo "note: using RANDOM ResNet-50 weights for this demo (real ones cannot be had here)." >&2
    echo "      Embedding scores mean nothing with them, so 'similar' is turned off" >&2
    echo "      (--threshold 1.0); exact and near-identical evidence work as with real weights." >&2
    [ -f .cache/resnet50-random.safetensors ] ||
      "$VENV/bin/python" scripts/make_random_weights.py resnet50 \
        .cache/resnet50-random.safetensors
    export DUPECHECK_WEIGHTS="$PWD/.cache/resnet50-random.safetensors"
    check_args+=(--threshold 1.0)
  fi
fi

set -x
"$DUPECHECK" index examples/instagram-jane.doe-2025-10-29-UXHp.zip --rebuild || exit $?
"$DUPECHECK" check examples/candidates/*.jpg --top-k 3 "${check_args[@]}"
status=$?
{ set +x; } 2>/dev/null
echo "exit code $status: 1 means at least one photo is already posted (expected here:" \
     "IMG_0412.jpg, flower-reedit.jpg and walk-recropped.jpg are, never-posted.jpg is not)" >&2
[ "$status" -eq 1 ]
