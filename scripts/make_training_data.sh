#!/usr/bin/env bash
# Build the SYNTHETIC training/evaluation set used for the shipped weights and the benchmark:
# two training towns (same-area test drives from them), one unseen town for cross-area
# validation (calibration) and one more unseen town for the cross-area test.
set -euo pipefail
ROOT=${1:-data/g2s_synth}
DURATION=${DURATION:-30}
PRESET=${PRESET:-default}  # PRESET=hard or harder: the worlds that need learning (synthetic/presets.py)
G2S=${G2S:-.venv/bin/g2s}
for town in 10 11 20 30; do
  [ -f "$ROOT/worlds/town$town/world.yaml" ] || $G2S make-world "$ROOT/worlds/town$town" --seed $town --preset "$PRESET"
done
for town in 10 11; do
  for n in 1 2 3; do
    [ -d "$ROOT/raw_data/2026_01_$town/2026_01_${town}_drive_000${n}_sync" ] || \
      $G2S make-drive "$ROOT" --world "$ROOT/worlds/town$town" --seed $n --duration "$DURATION" \
        --date 2026_01_$town --number $n --split train --preset "$PRESET"
  done
  [ -d "$ROOT/raw_data/2026_01_$town/2026_01_${town}_drive_0004_sync" ] || \
    $G2S make-drive "$ROOT" --world "$ROOT/worlds/town$town" --seed 4 --duration 15 --date 2026_01_$town \
      --number 4 --split test1 --preset "$PRESET"
done
for n in 1 2; do
  [ -d "$ROOT/raw_data/2026_01_20/2026_01_20_drive_000${n}_sync" ] || \
    $G2S make-drive "$ROOT" --world "$ROOT/worlds/town20" --seed $((n + 10)) --duration 20 --date 2026_01_20 \
      --number $n --split test2 --preset "$PRESET"
done
# unseen town 30: cross-area validation, used only to calibrate the covariance temperature
[ -d "$ROOT/raw_data/2026_01_30/2026_01_30_drive_0001_sync" ] || \
  $G2S make-drive "$ROOT" --world "$ROOT/worlds/town30" --seed 21 --duration 15 --date 2026_01_30 --number 1 \
    --split val2 --preset "$PRESET"
# EXTRA_TOWNS="12 13 14 15": more training towns, three drives each, listed apart in train_more_files.txt
# (train on all with split: train+train_more); GNSS-labelled drives are what weak training can have more of
for town in ${EXTRA_TOWNS:-}; do
  [ -f "$ROOT/worlds/town$town/world.yaml" ] || $G2S make-world "$ROOT/worlds/town$town" --seed $town --preset "$PRESET"
  for n in 1 2 3; do
    [ -d "$ROOT/raw_data/2026_01_$town/2026_01_${town}_drive_000${n}_sync" ] || \
      $G2S make-drive "$ROOT" --world "$ROOT/worlds/town$town" --seed $n --duration "$DURATION" \
        --date 2026_01_$town --number $n --split train_more --preset "$PRESET"
  done
done
echo "synthetic set ready in $ROOT"
