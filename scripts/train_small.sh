#!/usr/bin/env bash
# Reproduce the small trained checkpoints lipx ships (lipx/assets/checkpoints) and `lipx demo`
# uses: two synthetic corpora -> prepared -> 30 minutes of training each on a CPU, then each
# fine-tuned for streams (lipreading 24 minutes, lip-to-speech 15) -> eval on the held-out
# speakers -> slim fp16 copies -> both packages scored on held-out test streams. The runs go one
# after the other, each with the whole machine (2 threads), as the README's results were
# measured. About 2 hours 15 minutes on 2 cores; outputs in ${1:-runs-small}.
set -euo pipefail
DIR="${1:-runs-small}"
mkdir -p "$DIR"
step() { printf '\n== %s\n' "$*"; }

step "corpora: synthetic LRW (20 words, 40 speakers, 8 held out) and GRID (24 speakers)"
lipx data synth "$DIR/lrw" --layout lrw --speakers 40 --held-out 8 --words 20 \
    --clips-per-word 100 --val-per-word 10 --test-per-word 10 --workers 2
lipx data synth "$DIR/grid" --layout grid --speakers 24 --utterances 40 --workers 2
lipx data prepare lrw "$DIR/lrw" -o "$DIR/lrw-prep" --workers 2
lipx data prepare grid "$DIR/grid" -o "$DIR/grid-prep" --workers 2

step "streams of the LRW recipe: training speakers (to train on), held-out halves (val, test)"
lipx data synth "$DIR/lrw-streams-train" --layout lrw-streams --like "$DIR/lrw" --part train \
    --streams 96 --per-stream 20
lipx data synth "$DIR/lrw-streams-val" --layout lrw-streams --like "$DIR/lrw" --part val \
    --streams 48
lipx data synth "$DIR/lrw-streams-test" --layout lrw-streams --like "$DIR/lrw" --part test \
    --streams 64

step "streams of the GRID recipe: the unseen protocol's training speakers, held-out halves"
lipx data synth "$DIR/grid-streams-train" --layout grid-streams --like "$DIR/grid" --part train \
    --streams 60 --per-stream 4
lipx data synth "$DIR/grid-streams-val" --layout grid-streams --like "$DIR/grid" --part val \
    --streams 9
lipx data synth "$DIR/grid-streams-test" --layout grid-streams --like "$DIR/grid" --part test \
    --streams 12

step "train the small presets, 30 minutes each (configs/*-small.yaml)"
lipx train lipreading "$DIR/lrw-prep" -o "$DIR/lipreading-clips" \
    --config configs/lipreading-small.yaml
lipx train lip2speech "$DIR/grid-prep" -o "$DIR/lip2speech-clips" \
    --config configs/lip2speech-small.yaml

step "fine-tune both for streams: lipreading 24 minutes, lip-to-speech 15 (configs/*-streams.yaml)"
lipx train lipreading "$DIR/lrw-prep" -o "$DIR/lipreading" \
    --config configs/lipreading-small-streams.yaml --set init="$DIR/lipreading-clips/best.lipx" \
    --set streams="$DIR/lrw-streams-train" --set val_streams="$DIR/lrw-streams-val"
lipx train lip2speech "$DIR/grid-prep" -o "$DIR/lip2speech" \
    --config configs/lip2speech-small-streams.yaml \
    --set init="$DIR/lip2speech-clips/best.lipx" --set streams="$DIR/grid-streams-train"

step "evaluate on the held-out speakers (test part)"
lipx eval "$DIR/lipreading/best.lipx" "$DIR/lrw-prep" --json "$DIR/lipreading-eval.json"
lipx eval "$DIR/lip2speech/best.lipx" "$DIR/grid-prep" --json "$DIR/lip2speech-eval.json"

step "slim fp16 copies for lipx/assets/checkpoints"
lipx slim "$DIR/lipreading/best.lipx" -o "$DIR/lipreading.lipx" --half
lipx slim "$DIR/lip2speech/best.lipx" -o "$DIR/lip2speech.lipx" --half

step "streams: export, then score the held-out test streams (package defaults)"
lipx export "$DIR/lipreading.lipx" -o "$DIR/lipreading-pkg"
lipx eval "$DIR/lipreading-pkg" "$DIR/lrw-streams-test" --stream \
    --json "$DIR/lipreading-streams-test.json"
lipx export "$DIR/lip2speech.lipx" -o "$DIR/lip2speech-pkg"
lipx eval "$DIR/lip2speech-pkg" "$DIR/grid-streams-test" --stream \
    --json "$DIR/lip2speech-streams-test.json"
printf '\nTo ship them: cp %s/lipreading.lipx %s/lip2speech.lipx lipx/assets/checkpoints/\n' \
    "$DIR" "$DIR"
