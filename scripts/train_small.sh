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

# streams CORPUS TRAIN PER_STREAM VAL TEST: CORPUS's streams of its training speakers (TRAIN
# streams of PER_STREAM phrases, to train on), and of each half of its held-out speakers (VAL to
# tune on, TEST to report on)
streams() {
    lipx data synth "$DIR/$1-streams-train" --layout "$1-streams" --like "$DIR/$1" --part train \
        --streams "$2" --per-stream "$3"
    lipx data synth "$DIR/$1-streams-val" --layout "$1-streams" --like "$DIR/$1" --part val \
        --streams "$4"
    lipx data synth "$DIR/$1-streams-test" --layout "$1-streams" --like "$DIR/$1" --part test \
        --streams "$5"
}
step "streams: LRW (training speakers, validation and test halves of the held-out ones), GRID"
streams lrw 96 20 48 64
# twins in the wild (the same faces placed, moved and rotated in a 640x480 frame) of the first
# 48 training streams and of the validation and test streams, for --crop auto
lipx data synth "$DIR/lrw-streams-train-wild" --layout lrw-streams --like "$DIR/lrw" \
    --part train --streams 48 --per-stream 20 --wild
lipx data synth "$DIR/lrw-streams-val-wild" --layout lrw-streams --like "$DIR/lrw" --part val \
    --streams 48 --wild
lipx data synth "$DIR/lrw-streams-test-wild" --layout lrw-streams --like "$DIR/lrw" \
    --part test --streams 64 --wild
streams grid 60 4 9 12   # GRID's training speakers: the unseen protocol's, not its val ones

step "train the small presets, 30 minutes each (configs/*-small.yaml)"
lipx train lipreading "$DIR/lrw-prep" -o "$DIR/lipreading-clips" \
    --config configs/lipreading-small.yaml
lipx train lip2speech "$DIR/grid-prep" -o "$DIR/lip2speech-clips" \
    --config configs/lip2speech-small.yaml

step "fine-tune both for streams: lipreading 24 minutes, lip-to-speech 15 (configs/*-streams.yaml)"
lipx train lipreading "$DIR/lrw-prep" -o "$DIR/lipreading" \
    --config configs/lipreading-small-streams.yaml --set init="$DIR/lipreading-clips/best.lipx" \
    --set streams="$DIR/lrw-streams-train" --set val_streams="$DIR/lrw-streams-val"
step "lipreading once more, 15 minutes, on the training streams and their twins in the wild"
lipx train lipreading "$DIR/lrw-prep" -o "$DIR/lipreading-wild" \
    --config configs/lipreading-small-wild.yaml --set init="$DIR/lipreading/best.lipx" \
    --set streams="$DIR/lrw-streams-train,$DIR/lrw-streams-train-wild" \
    --set val_streams="$DIR/lrw-streams-val,$DIR/lrw-streams-val-wild"
lipx train lip2speech "$DIR/grid-prep" -o "$DIR/lip2speech" \
    --config configs/lip2speech-small-streams.yaml \
    --set init="$DIR/lip2speech-clips/best.lipx" --set streams="$DIR/grid-streams-train"

step "evaluate on the held-out speakers (test part)"
lipx eval "$DIR/lipreading-wild/best.lipx" "$DIR/lrw-prep" --json "$DIR/lipreading-eval.json"
lipx eval "$DIR/lip2speech/best.lipx" "$DIR/grid-prep" --json "$DIR/lip2speech-eval.json"

step "slim fp16 copies for lipx/assets/checkpoints"
lipx slim "$DIR/lipreading-wild/best.lipx" -o "$DIR/lipreading.lipx" --half
lipx slim "$DIR/lip2speech/best.lipx" -o "$DIR/lip2speech.lipx" --half

step "streams: export, then score the held-out test streams (package defaults)"
lipx export "$DIR/lipreading.lipx" -o "$DIR/lipreading-pkg"
lipx eval-stream "$DIR/lipreading-pkg" "$DIR/lrw-streams-test" \
    --json "$DIR/lipreading-streams-test.json"
lipx eval-stream "$DIR/lipreading-pkg" "$DIR/lrw-streams-test-wild" --crop auto \
    --json "$DIR/lipreading-streams-test-wild.json"
lipx export "$DIR/lip2speech.lipx" -o "$DIR/lip2speech-pkg"
lipx eval-stream "$DIR/lip2speech-pkg" "$DIR/grid-streams-test" \
    --json "$DIR/lip2speech-streams-test.json"
printf '\nTo ship them: cp %s/lipreading.lipx %s/lip2speech.lipx lipx/assets/checkpoints/\n' \
    "$DIR" "$DIR"
