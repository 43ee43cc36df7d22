#!/usr/bin/env bash
# Download the standard ann-benchmarks sets (HDF5: train, test, neighbors,
# distances; the "distance" attribute names the metric) and verify them.
#
# Usage: datasets/ann-benchmarks.sh [--record] [--dest DIR] [NAME ...]
#        datasets/ann-benchmarks.sh --list
# NAME is a set name below (default: glove-100-angular sift-128-euclidean
# nytimes-256-angular fashion-mnist-784-euclidean). DIR defaults to
# $TQVEC_DATA or ~/.cache/tqvec/ann-benchmarks -- never the repository.
#
# Every file is checked against datasets/ann-benchmarks.sha256 and a file
# whose SHA-256 differs is deleted, not used. A set with no recorded sum is
# refused unless --record is given, which keeps the file and appends its sum
# to the table (to be committed: that is how a sum enters the table, taken
# on a machine with internet and reviewed like code). Downloads go to a
# temporary name and resume; a file is only renamed into place once
# verified. Then: tqvec eval --base DIR/NAME.hdf5 (test, neighbors and the
# metric come from the file).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sums=$here/ann-benchmarks.sha256
url=${TQVEC_ANN_URL:-http://ann-benchmarks.com}
dest=${TQVEC_DATA:-$HOME/.cache/tqvec}/ann-benchmarks
record=0
# name  dimension  train  test  metric   (from the ann-benchmarks README)
catalogue="
glove-25-angular 25 1183514 10000 angular
glove-50-angular 50 1183514 10000 angular
glove-100-angular 100 1183514 10000 angular
glove-200-angular 200 1183514 10000 angular
sift-128-euclidean 128 1000000 10000 euclidean
gist-960-euclidean 960 1000000 1000 euclidean
nytimes-256-angular 256 290000 10000 angular
fashion-mnist-784-euclidean 784 60000 10000 euclidean
mnist-784-euclidean 784 60000 10000 euclidean
deep-image-96-angular 96 9990000 10000 angular
lastfm-64-dot 65 292385 50000 dot
"
names=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --dest) dest=$2; shift ;;
    --list) echo "$catalogue" | sed '/^$/d'; exit 0 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "ann-benchmarks.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("$1") ;;
  esac
  shift
done
[ ${#names[@]} -gt 0 ] || names=(glove-100-angular sift-128-euclidean nytimes-256-angular fashion-mnist-784-euclidean)
command -v curl >/dev/null || { echo "ann-benchmarks.sh: needs curl" >&2; exit 1; }
mkdir -p "$dest"
status=0
for name in "${names[@]}"; do
  if ! echo "$catalogue" | grep -q "^$name "; then
    echo "ann-benchmarks.sh: unknown set '$name' (--list shows them)" >&2; status=1; continue
  fi
  file=$dest/$name.hdf5
  want=$(awk -v f="$name.hdf5" '$2 == f { print $1 }' "$sums" 2>/dev/null || true)
  if [ -f "$file" ]; then
    if [ -n "$want" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
      echo "$name: present and verified ($file)"; continue
    fi
    [ -z "$want" ] && [ $record = 0 ] && { echo "$name: present but no recorded sum; --record to accept it" >&2; status=1; continue; }
  fi
  if [ -z "$want" ] && [ $record = 0 ]; then
    echo "$name: no SHA-256 recorded in $sums; refusing an unverifiable download (--record to take and record one)" >&2
    status=1; continue
  fi
  echo "$name: downloading $url/$name.hdf5"
  if ! curl -fL --retry 3 -C - -o "$file.part" "$url/$name.hdf5"; then
    echo "$name: download failed (no internet here?)" >&2; status=1; continue
  fi
  got=$(sha256sum "$file.part" | cut -d' ' -f1)
  if [ -n "$want" ] && [ "$got" != "$want" ]; then
    echo "$name: SHA-256 $got, expected $want: deleted" >&2; rm -f "$file.part"; status=1; continue
  fi
  # The HDF5 signature, so an HTML error page is not recorded as data.
  if [ "$(head -c 8 "$file.part" | od -An -tx1 | tr -d ' \n')" != "894844460d0a1a0a" ]; then
    echo "$name: not an HDF5 file: deleted" >&2; rm -f "$file.part"; status=1; continue
  fi
  mv "$file.part" "$file"
  if [ -z "$want" ]; then
    echo "$got  $name.hdf5" >> "$sums"
    echo "$name: recorded SHA-256 $got in $sums (commit it)"
  fi
  echo "$name: verified ($file)"
done
exit $status
