#!/usr/bin/env bash
# The main job end to end on a CPU, in a few minutes, with data lipx makes itself:
# a synthetic LRW-layout corpus -> prepared -> a short lipreading training run -> evaluation ->
# an ONNX model package with parity checks -> streaming a held-out test clip through it.
# (60 training steps: the words it reads are not yet reliable; see README "What was not verified".)
# Outputs go to ${LIPX_DEMO_DIR:-lipx-demo}; a second run reuses what exists.
set -euo pipefail
DIR="${LIPX_DEMO_DIR:-lipx-demo}"
mkdir -p "$DIR"
step() { printf '\n== %s\n' "$*"; }

step "1/5 synthetic corpus (LRW layout, 8 words, 5 speakers, 1 held out)"
lipx data synth "$DIR/synth" --layout lrw --words 8 --speakers 5 --held-out 1 \
    --clips-per-word 20 --val-per-word 4 --test-per-word 4 --workers 2
lipx data prepare lrw "$DIR/synth" -o "$DIR/prepared" --workers 2

step "2/5 train the tiny lipreading model for a few steps"
if [ ! -f "$DIR/run/last.lipx" ]; then
    lipx train lipreading "$DIR/prepared" -o "$DIR/run" --preset tiny --steps 60 \
        --batch-size 8 --set val_every=30 --set lr=0.01
fi

step "3/5 evaluate on the held-out speaker"
lipx eval "$DIR/run/best.lipx" "$DIR/prepared" --json "$DIR/eval.json"

step "4/5 export an ONNX package (whole model + streaming split, parity checked)"
lipx export "$DIR/run/best.lipx" -o "$DIR/package" --force

step "5/5 stream a held-out test clip through the package"
clip=$(ls "$DIR"/synth/*/test/*_00001.mp4 | head -n 1)
lipx stream "$clip" --model "$DIR/package" --jsonl "$DIR/words.jsonl" --srt "$DIR/words.srt" \
    --save "$DIR/annotated.mp4" --stats "$DIR/stats.json"

printf '\nOutputs in %s: eval.json, package/, words.jsonl, words.srt, annotated.mp4, stats.json\n' "$DIR"
printf 'Next: lipx stream webcam --model %s/package --crop auto | lipx bench %s/package\n' "$DIR" "$DIR"
