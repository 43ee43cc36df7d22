#!/usr/bin/env bash
# Build the Fashion-MNIST evaluation set from Debian's dataset-fashion-mnist
# package: the 60,000 training images as base, the 10,000 test images as
# queries (held out by construction), exact l2 top-100 ground truth.
# Usage: datasets/fashion-mnist.sh TQVEC_BINARY OUT_DIR
# Idempotent: an existing, complete OUT_DIR is kept.
set -euo pipefail
tqvec=$1
out=$2
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  echo "fashion-mnist.sh: $src is missing; install the dataset-fashion-mnist package (tools/setup does)" >&2
  exit 1
fi
mkdir -p "$out"
if [ -f "$out/base.fvecs" ] && [ -f "$out/query.fvecs" ] && [ -f "$out/gt.ivecs" ]; then
  echo "fashion-mnist: using $out" >&2
  exit 0
fi
"$tqvec" convert "$src/train-images-idx3-ubyte.gz" "$out/base.fvecs"
"$tqvec" convert "$src/t10k-images-idx3-ubyte.gz" "$out/query.fvecs"
# Written under a temporary name so an interrupted run is redone, not trusted.
"$tqvec" gt --base "$out/base.fvecs" --queries "$out/query.fvecs" --metric l2 -k 100 --out "$out/gt.tmp.ivecs"
mv "$out/gt.tmp.ivecs" "$out/gt.ivecs"
