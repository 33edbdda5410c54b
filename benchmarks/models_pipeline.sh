#!/usr/bin/env bash
# Every model of stae_ref/models/ through the whole toolkit, as a user would run it:
# export (+ parity checks) -> FP16 (checked) -> calibrate -> INT8 (checked) -> drift vs FP32 ->
# stae run on real footage. Prints each model's drift summary as one JSON line.
#
#     bash benchmarks/models_pipeline.sh [OUT_DIR] [DRIFT_STEPS]     (after `make install`)
#
# Models without a committed checkpoint run with seeded random weights: their drift measures the
# arithmetic of each precision on that cell, not a trained model's behaviour.
set -euo pipefail
out=${1:-out/models}
steps=${2:-200}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
city=$("$bin/stae" data city --json | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["city"])')
for config in stae_ref/models/*.json; do
  name=$(basename "$config" .json)
  if [ "$name" = stae ]; then source=(--checkpoint stae_ref/checkpoints/demo/stae_demo.pt)
  else source=(--config "$config"); fi
  echo "== $name" >&2
  "$bin/stae" export "${source[@]}" -o "$out/$name.onnx" --force --quiet >&2
  "$bin/stae" fp16 "$out/$name.onnx" -o "$out/$name.fp16.onnx" --force --quiet >&2
  "$bin/stae" calibrate "$out/$name.onnx" -o "$out/$name.calib.npz" --force >&2
  "$bin/stae" quantize "$out/$name.onnx" --calib "$out/$name.calib.npz" \
    -o "$out/$name.int8.onnx" --target onnxruntime --force --quiet >&2
  "$bin/stae" drift "$out/$name.onnx" "$out/$name.int8.onnx" "$out/$name.fp16.onnx" \
    --steps "$steps" --json --force | "$bin/python" -c \
    "import json,sys; print(json.dumps({'model': '$name', 'drift': json.load(sys.stdin)}))"
  "$bin/stae" run "$out/$name.onnx" --input "$city" --max-frames 30 --quiet --force \
    --metrics "$out/$name.run.jsonl" >&2
done
