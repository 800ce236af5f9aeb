#!/usr/bin/env bash
# Index the example export shipped in examples/ and check three photos against it.
# Uses the real ResNet-50 weights when they are cached or can be downloaded; on a
# machine that can do neither, EfficientNet-Lite0's, which its install brings (trained
# weights, no download).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-demo}"  # the light install `make demo` makes (no PyTorch)
DUPECHECK="$VENV/bin/dupecheck"
export DUPECHECK_INDEX="${DUPECHECK_INDEX:-$PWD/.cache/demo-index}"

model=resnet50
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
    # EfficientNet-Lite0's trained weights come with the demo's install (dupecheck[lite0]):
    # real scores and 'similar' on, with no download.
    echo "note: ResNet-50's weights cannot be had here; this demo uses EfficientNet-Lite0" >&2
    echo "      (trained ImageNet weights from the installed package: real scores)." >&2
    model=efficientnet-lite0
  fi
fi
echo "model: $model" >&2

set -x
"$DUPECHECK" index examples/instagram-jane.doe-2025-10-29-UXHp.zip --rebuild --model "$model" \
  || exit $?
"$DUPECHECK" check examples/candidates/*.jpg --top-k 3 --model "$model"
status=$?
{ set +x; } 2>/dev/null
echo "exit code $status: 1 means at least one photo is already posted (expected here:" \
     "IMG_0412.jpg, flower-reedit.jpg and walk-recropped.jpg are, never-posted.jpg is not)" >&2
[ "$status" -eq 1 ]
