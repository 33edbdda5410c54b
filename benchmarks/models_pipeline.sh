#!/usr/bin/env bash
# Every model of stae_ref/models/ through the whole toolkit, as a user would run it:
# export (+ parity checks) -> FP16 (checked) -> calibrate -> INT8 (checked) -> drift vs FP32 ->
# stae run on real footage. Prints each model's drift summary as one JSON line, with whether its
# INT8 graph passed `stae quantize`'s parity check.
#
#     bash benchmarks/models_pipeline.sh [OUT_DIR] [DRIFT_STEPS]     (after `make install`)
#
# Each model runs from its committed checkpoint (stae_ref/checkpoints/, the folders `stae bench
# --models` reads); a model without one runs with seeded random weights, whose drift measures the
# arithmetic of each precision on that cell, not a trained model's behaviour.
set -euo pipefail
out=${1:-out/models}
steps=${2:-200}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
city=$("$bin/stae" data city --json | "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["city"])')
for config in stae_ref/models/*.json; do
  name=$(basename "$config" .json)
  read -r -a source < <("$bin/python" -c "from stae_deploy.benchmarks.bench_models import model_source
source = model_source('$name', seed=0)
print(f'--checkpoint {source.checkpoint}' if source.checkpoint else f'--config {source.config}')")
  echo "== $name" >&2
  "$bin/stae" export "${source[@]}" -o "$out/$name.onnx" --force --quiet >&2
  "$bin/stae" fp16 "$out/$name.onnx" -o "$out/$name.fp16.onnx" --force --quiet >&2
  "$bin/stae" calibrate "$out/$name.onnx" -o "$out/$name.calib.npz" --force >&2
  # A failed INT8 parity check is a result, not the end of the run: the graph is written, its
  # drift is measured below, and the JSON line says the check failed.
  int8_check=passed
  "$bin/stae" quantize "$out/$name.onnx" --calib "$out/$name.calib.npz" \
    -o "$out/$name.int8.onnx" --target onnxruntime --force --quiet >&2 || int8_check=failed
  "$bin/stae" drift "$out/$name.onnx" "$out/$name.int8.onnx" "$out/$name.fp16.onnx" \
    --steps "$steps" --json --force | "$bin/python" -c "import json,sys
print(json.dumps({'model': '$name', 'int8_check': '$int8_check', 'drift': json.load(sys.stdin)}))"
  "$bin/stae" run "$out/$name.onnx" --input "$city" --max-frames 30 --quiet --force \
    --metrics "$out/$name.run.jsonl" >&2
done
