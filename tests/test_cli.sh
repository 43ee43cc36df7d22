#!/usr/bin/env bash
# End-to-end checks of the tqvec command line: real files in, exit codes and
# output formats out. Usage: test_cli.sh PATH/TO/tqvec
set -u
tqvec=$1
data=${TQVEC_SHARED_DATASETS:-../shared/datasets}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0 passes=0

pass() { passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_fail "what" cmd...: the command must exit non-zero and say why.
expect_fail() {
  local what=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then fail "$what: succeeded"; return; fi
  grep -q "tqvec" "$work/err" && pass || fail "$what: no message ($(cat "$work/err"))"
}

"$tqvec" version | grep -q "^tqvec [0-9]" && pass || fail "version"

# Convert: fvecs -> npy -> fvecs is lossless, bvecs rejects non-bytes.
if [ -f "$data/fiori-minilm/base.fvecs" ]; then
  "$tqvec" convert "$data/fiori-minilm/base.fvecs" "$work/b.npy" 2>/dev/null && \
  "$tqvec" convert "$work/b.npy" "$work/b.fvecs" 2>/dev/null && \
  cmp -s "$data/fiori-minilm/base.fvecs" "$work/b.fvecs" && pass || fail "fvecs/npy round trip"
  "$tqvec" convert "$data/fiori-minilm/base.fvecs" "$work/part.fvecs" --skip 100 --limit 10 2>/dev/null && \
    [ "$(stat -c %s "$work/part.fvecs")" -eq $((10 * (4 + 384 * 4))) ] && pass || fail "convert --skip/--limit"
  expect_fail "bvecs of floats" "$tqvec" convert "$data/fiori-minilm/base.fvecs" "$work/b.bvecs"

  # Ground truth from the tool equals the shipped exact ground truth.
  "$tqvec" gt --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
    --metric ip -k 100 --out "$work/gt.ivecs" 2>/dev/null && \
    cmp -s "$work/gt.ivecs" "$data/fiori-minilm/gt.ivecs" && pass || fail "gt equals shipped ground truth"

  # eval: JSON lines with every documented key, one per configuration.
  "$tqvec" eval --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
    --gt "$data/fiori-minilm/gt.ivecs" --metric cosine --bits 2,4 --variant mse,prod --rerank 0,4 \
    --json - >"$work/eval.json" 2>"$work/table" || fail "eval ran"
  python3 - "$work/eval.json" <<'PY' && pass || fail "eval JSON"
import json, sys
need = {"bits", "variant", "correction", "rerank", "k", "n", "d", "metric", "recall_at_1", "recall_at_k",
        "recall_1_at_k", "qps", "p50_us", "p99_us", "build_s", "build_vps", "bytes_per_vector", "simd"}
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 8, len(rows)
for r in rows:
    missing = need - r.keys()
    assert not missing, missing
    assert 0 <= r["recall_at_k"] <= 1 and r["n"] == 728 and r["d"] == 384
    if r["rerank"] == 4:
        assert r["recall_at_k"] >= 0.95, r
PY
  grep -q "R@k" "$work/table" && pass || fail "eval table on stderr when JSON goes to stdout"

  # Batched and threaded searches answer exactly as single queries do.
  "$tqvec" eval --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
    --gt "$data/fiori-minilm/gt.ivecs" --metric cosine --bits 2 --batch 7 --threads 2 \
    --json "$work/batched.json" >/dev/null 2>&1 && \
  python3 -c "
import json, sys
single = [json.loads(l) for l in open(sys.argv[1])]
single = [r for r in single if r['bits'] == 2 and r['variant'] == 'mse' and r['rerank'] == 0][0]
b = json.load(open(sys.argv[2]))
assert b['batch'] == 7 and b['threads'] == 2, b
for key in ('recall_at_1', 'recall_at_k', 'recall_1_at_k'):
    assert b[key] == single[key], (key, b[key], single[key])
" "$work/eval.json" "$work/batched.json" && pass || fail "eval --batch --threads: same recall"

  # Stored collection: build with keys, query finds the true nearest (the
  # shipped ground truth's first row) for the first queries, info, compact,
  # verify; a second build upserts instead of duplicating.
  coll="$work/coll"
  awk '{print "row-" NR-1}' "$data/fiori-minilm/base_ids.txt" >"$work/keys.txt"
  "$tqvec" build --input "$data/fiori-minilm/base.fvecs" --keys "$work/keys.txt" --dir "$coll" --metric cosine \
    --refine fp32 --segment-rows 300 >"$work/build.out" 2>&1 && grep -q "728 new" "$work/build.out" \
    && pass || fail "build ($(cat "$work/build.out"))"
  "$tqvec" query --dir "$coll" --queries "$data/fiori-minilm/query.fvecs" --nq 20 -k 10 --rerank 4 \
    >"$work/query.out" 2>/dev/null && python3 - "$work/query.out" "$data/fiori-minilm/gt.ivecs" <<'PY' && pass || fail "query finds the true nearest"
import struct, sys
lines = open(sys.argv[1]).read().split("\n")
raw = open(sys.argv[2], "rb").read()
k = struct.unpack_from("<i", raw, 0)[0]
hits = 0
for q in range(20):
    first = struct.unpack_from("<i", raw, q * 4 * (k + 1) + 4)[0]
    top = lines[q].split()[1].split(":")[0]
    hits += top == "row-%d" % first
assert hits >= 19, hits
PY
  "$tqvec" build --input "$data/fiori-minilm/base.fvecs" --keys "$work/keys.txt" --dir "$coll" --limit 100 \
    >"$work/build2.out" 2>&1 && grep -q "(0 new)" "$work/build2.out" && \
  "$tqvec" info "$coll" | grep -q "728 elements, 100 deleted" && pass || fail "second build upserts"
  "$tqvec" compact "$coll" >/dev/null && "$tqvec" info "$coll" | grep -q "728 elements, 0 deleted" && \
    "$tqvec" verify "$coll" >/dev/null && pass || fail "compact and verify"
  seg=$(ls "$coll"/seg/*.tqs | head -1)
  printf '\xff' | dd of="$seg" bs=1 seek=5000 conv=notrunc 2>/dev/null
  expect_fail "verify finds a damaged segment" "$tqvec" verify "$coll"
  grep -q "fails its checksum" "$work/err" && pass || fail "verify names the damage ($(cat "$work/err"))"
  expect_fail "query of the wrong dimension" "$tqvec" query --dir "$coll" --queries "$data/siftsmall/query.fvecs"

  # Attributes and filters: every match passes the filter, ten come back
  # while ten match, and a syntax error names the place.
  awk '{printf "{\"i\": %d, \"half\": \"%s\"}\n", NR-1, (NR-1) % 2 ? "odd" : "even"}' \
    "$data/fiori-minilm/base_ids.txt" >"$work/attrs.jsonl"
  "$tqvec" build --input "$data/fiori-minilm/base.fvecs" --attrs "$work/attrs.jsonl" --dir "$work/fcoll" \
    --metric cosine >/dev/null 2>&1 && \
  "$tqvec" query --dir "$work/fcoll" --queries "$data/fiori-minilm/query.fvecs" --nq 5 -k 10 --attrs \
    --filter ".half == 'odd' and .i < 200" >"$work/fquery.out" 2>/dev/null && python3 - "$work/fquery.out" <<'PY' && pass || fail "query --filter"
import json, sys
for line in open(sys.argv[1]):
    parts = line.split(" ", 1)[1]
    matches = [m for m in parts.split(" ") if ":" in m and not m.startswith("{") and not m.startswith('"')]
    rows = [int(m.split(":")[0]) for m in matches]
    assert len(rows) == 10, line
    assert all(r % 2 == 1 and r < 200 for r in rows), rows
PY
  # Centering chosen at build: auto took the first add's mean above (728
  # cosine vectors); none keeps the codes uncentered; a wrong name is refused.
  "$tqvec" info "$work/fcoll" | grep -q "centering on the first batch's mean" && \
  "$tqvec" build --input "$data/fiori-minilm/base.fvecs" --dir "$work/ncoll" --metric cosine --center none \
    >/dev/null 2>&1 && "$tqvec" info "$work/ncoll" | grep -q "centering none" && pass || fail "build --center"
  expect_fail "build --center of no known kind" "$tqvec" build --input "$data/fiori-minilm/base.fvecs" \
    --dir "$work/xcoll" --center middle
  expect_fail "filter syntax error" "$tqvec" query --dir "$work/fcoll" --queries "$data/fiori-minilm/query.fvecs" \
    --filter ".i <"
  grep -q "syntax error in FILTER expression near: <" "$work/err" && pass || fail "filter error names the place ($(cat "$work/err"))"

  # eval --dir: builds a collection (row-number keys) on first use, then
  # evaluates the stored copy: same recall as in memory, twice.
  for run in 1 2; do
    "$tqvec" eval --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
      --gt "$data/fiori-minilm/gt.ivecs" --metric cosine --bits 2 --dir "$work/evaldir" \
      --json "$work/stored$run.json" >/dev/null 2>&1 || fail "eval --dir run $run"
  done
  python3 -c "
import json, sys
mem = [json.loads(l) for l in open(sys.argv[1])]
mem = [r for r in mem if r['bits'] == 2 and r['variant'] == 'mse' and r['rerank'] == 0][0]
for f in sys.argv[2:]:
    r = json.load(open(f))
    assert r['target'] == 'dir' and r['target_where'] and r['recall_at_k'] == mem['recall_at_k'], (r, mem['recall_at_k'])
" "$work/eval.json" "$work/stored1.json" "$work/stored2.json" && pass || fail "eval --dir recall equals in-memory"
  expect_fail "eval --dir of another dimension" "$tqvec" eval --base "$data/siftsmall/base.fvecs" \
    --queries "$data/siftsmall/query.fvecs" --metric l2 --dir "$work/evaldir"

  # Without --gt the exact ground truth is computed: same recall as with it.
  "$tqvec" eval --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
    --metric ip --bits 3 --json "$work/a.json" >/dev/null 2>&1 && \
  "$tqvec" eval --base "$data/fiori-minilm/base.fvecs" --queries "$data/fiori-minilm/query.fvecs" \
    --gt "$data/fiori-minilm/gt.ivecs" --metric ip --bits 3 --json "$work/b.json" >/dev/null 2>&1 && \
  python3 -c "import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); assert a['recall_at_k']==b['recall_at_k']" \
    "$work/a.json" "$work/b.json" && pass || fail "computed ground truth"
else
  echo "SKIP: shared datasets not found at $data"
fi

# Storage format 1: collections written before 3-bit codes took the sextet
# layout (tests/data/format1, made by that build with `tqvec build ...
# --segment-rows 64`: one segment and 36 rows in the log, 3-bit mse and
# 4-bit prod). Opened by this build they answer as the old build did
# (its answers in *.expected: the same neighbours in the same order, scores
# equal to float rounding), verify, compact to the current format, and
# answer the same again; a row added afterwards lands beside the old ones.
fixtures=$(dirname "$0")/data/format1
same_answers() {
  python3 - "$1" "$2" <<'PY'
import sys
got, want = (open(p).read().split("\n") for p in sys.argv[1:3])
assert len(got) == len(want) > 1, (len(got), len(want))
for g, w in zip(got, want):
    g, w = g.split(), w.split()
    assert [x.split(":")[0] for x in g] == [x.split(":")[0] for x in w], (g, w)
    for x, y in zip(g[1:], w[1:]):
        a, b = float(x.split(":")[1]), float(y.split(":")[1])
        assert abs(a - b) <= 1e-4 * (1 + abs(b)), (g, w)
PY
}
for c in mse3 prod4; do
  cp -r "$fixtures/$c" "$work/legacy-$c"
  "$tqvec" query --dir "$work/legacy-$c" --queries "$fixtures/vectors.fvecs" -k 5 --nq 20 >"$work/q1" 2>/dev/null &&
    same_answers "$work/q1" "$fixtures/$c.expected" && pass || fail "format 1 $c answers as before"
  "$tqvec" verify "$work/legacy-$c" >/dev/null 2>&1 && pass || fail "format 1 $c verifies"
  "$tqvec" compact "$work/legacy-$c" >/dev/null 2>&1 &&
    "$tqvec" query --dir "$work/legacy-$c" --queries "$fixtures/vectors.fvecs" -k 5 --nq 20 >"$work/q2" 2>/dev/null &&
    same_answers "$work/q2" "$fixtures/$c.expected" && pass || fail "format 1 $c compacted answers the same"
  od -An -tu4 -j8 -N4 "$(ls "$work/legacy-$c"/seg/*.tqs | head -1)" | grep -qw 6 && pass ||
    fail "format 1 $c compacted into a format 6 segment"
  "$tqvec" convert "$fixtures/vectors.fvecs" "$work/one.fvecs" --limit 1 2>/dev/null &&
    printf 'new\n' >"$work/one.keys" &&
    "$tqvec" build --input "$work/one.fvecs" --keys "$work/one.keys" --dir "$work/legacy-$c" >/dev/null 2>&1 &&
    "$tqvec" query --dir "$work/legacy-$c" --queries "$work/one.fvecs" -k 101 2>/dev/null >"$work/q3" &&
    python3 -c '
import sys
hits = dict(x.rsplit(":", 1) for x in open(sys.argv[1]).read().split()[1:])
assert len(hits) == 101 and hits["new"] == hits["0"], hits
' "$work/q3" && pass || fail "format 1 $c takes a new row, encoded as the old ones"
done
# Storage format 2 (tests/data/format2): a cosine collection from before
# rows kept their input's length answers as before, verifies, and compacts
# into the current format (6) answering the same.
cp -r "$(dirname "$0")/data/format2/cos8" "$work/legacy-cos8"
"$tqvec" query --dir "$work/legacy-cos8" --queries "$fixtures/vectors.fvecs" -k 5 --nq 20 >"$work/q1" 2>/dev/null &&
  same_answers "$work/q1" "$(dirname "$0")/data/format2/cos8.expected" && pass || fail "format 2 answers as before"
"$tqvec" verify "$work/legacy-cos8" >/dev/null 2>&1 && pass || fail "format 2 verifies"
"$tqvec" compact "$work/legacy-cos8" >/dev/null 2>&1 &&
  "$tqvec" query --dir "$work/legacy-cos8" --queries "$fixtures/vectors.fvecs" -k 5 --nq 20 >"$work/q2" 2>/dev/null &&
  same_answers "$work/q2" "$(dirname "$0")/data/format2/cos8.expected" && pass || fail "format 2 compacted answers the same"
od -An -tu4 -j8 -N4 "$(ls "$work/legacy-cos8"/seg/*.tqs | head -1)" | grep -qw 6 && pass ||
  fail "format 2 compacted into a format 6 segment"

# Storage format 4 (tests/data/format4): a partitioned segment from before
# the calibration kept the full scan's recall at every re-rank depth
# answers as before, probing and asked for a recall, and verifies.
f4="$(dirname "$0")/data/format4"
cp -r "$f4/l2p" "$work/legacy-l2p"
"$tqvec" query --dir "$work/legacy-l2p" --queries "$f4/queries.fvecs" -k 5 --nprobe 1 >"$work/q1" 2>/dev/null &&
  same_answers "$work/q1" "$f4/nprobe1.expected" && pass || fail "format 4 probes as before"
"$tqvec" query --dir "$work/legacy-l2p" --queries "$f4/queries.fvecs" -k 5 --rerank 8 --target-recall 0.9 \
  >"$work/q2" 2>/dev/null && same_answers "$work/q2" "$f4/recall90.expected" && pass ||
  fail "format 4 answers a target recall as before"
"$tqvec" verify "$work/legacy-l2p" >/dev/null 2>&1 && pass || fail "format 4 verifies"

# Bad input: each a non-zero exit with a message, never a crash.
printf 'abc' >"$work/junk.fvecs"
expect_fail "truncated fvecs" "$tqvec" eval --base "$work/junk.fvecs" --queries "$work/junk.fvecs" --metric l2
expect_fail "missing file" "$tqvec" eval --base "$work/nope.fvecs" --queries "$work/nope.fvecs" --metric l2
expect_fail "bad metric" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric manhattan
expect_fail "bad bits" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 --bits 1,9
expect_fail "target dir without --dir" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 --targets dir
expect_fail "--dir and --server without --targets" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 \
  --dir "$work/x" --server 127.0.0.1:1
expect_fail "--server outside --targets" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 \
  --server 127.0.0.1:1 --targets memory
expect_fail "unknown target" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 --targets cloud
expect_fail "bad repeat" "$tqvec" eval --base a.fvecs --queries b.fvecs --metric l2 --repeat 0
if [ -f "$work/part.fvecs" ]; then
  expect_fail "server unreachable" "$tqvec" eval --base "$work/part.fvecs" --queries "$work/part.fvecs" \
    --metric l2 --server 127.0.0.1:1
  grep -q "cannot connect to 127.0.0.1:1" "$work/err" && pass || fail "unreachable server named ($(cat "$work/err"))"
fi
expect_fail "unknown command" "$tqvec" frobnicate
expect_fail "unknown simd level" env TQVEC_SIMD=sse9 "$tqvec" bench encode --dim 64 -n 100

"$tqvec" bench encode --dim 96 --bits 2 -n 2000 --json "$work/bench.json" >/dev/null && \
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['encode_vps']>0 and r['ratio']>0" \
    "$work/bench.json" && pass || fail "bench encode"
# l2 encodes with the default centering (a first add of 2,000 vectors); ip never centers
for m in l2:first ip:none; do
  "$tqvec" bench encode --dim 64 --bits 4 -n 2000 --metric "${m%%:*}" --json "$work/bench.json" >/dev/null && \
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['metric']==sys.argv[2] and r['center'].startswith(sys.argv[3]) and r['encode_vps']>0, r" \
      "$work/bench.json" "${m%%:*}" "${m##*:}" && pass || fail "bench encode --metric ${m%%:*}"
done

for threads in 1 2; do
  "$tqvec" bench scan --dim 100 --bits 2 -n 5000 --queries 8 --batch 4 --threads $threads --json "$work/scan.json" >/dev/null && \
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['qps']>0 and r['code_bytes']==5000*50/2 and r['threads']==$threads" \
      "$work/scan.json" && pass || fail "bench scan threads=$threads"
done

# synth: a seeded mixture, the same files for the same seed; partitioned
# in memory and probed for a target recall through eval, with the probe
# settings in its JSON lines.
"$tqvec" synth --n 3000 --dim 24 --queries 50 --seed 7 --out "$work/syn1" 2>/dev/null &&
  "$tqvec" synth --n 3000 --dim 24 --queries 50 --seed 7 --out "$work/syn2" 2>/dev/null &&
  cmp -s "$work/syn1/base.fvecs" "$work/syn2/base.fvecs" && cmp -s "$work/syn1/gt.ivecs" "$work/syn2/gt.ivecs" &&
  grep -q 'metric | \*\*l2\*\*' "$work/syn1/README.md" && pass || fail "synth is seeded and complete"
"$tqvec" eval --base "$work/syn1/base.fvecs" --queries "$work/syn1/query.fvecs" --gt "$work/syn1/gt.ivecs" \
  --metric l2 --bits 4 --rerank 4 --nprobe 0,4 --target-recall 0.9 --json "$work/ivf.jsonl" >/dev/null 2>&1 &&
  python3 - "$work/ivf.jsonl" <<'PY' && pass || fail "eval --nprobe/--target-recall records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert [(r["nprobe"], r["target_recall"]) for r in recs] == [(0, 0), (4, 0), (0, 0.9)], recs
assert all(r["index"] == "ivf" and r["nlist"] > 1 and r["seal_s"] > 0 for r in recs), recs
PY
expect_fail "--target-recall above 1" "$tqvec" eval --base "$work/syn1/base.fvecs" --queries "$work/syn1/query.fvecs" \
  --metric l2 --target-recall 1.5
expect_fail "--nlist with --dir" "$tqvec" eval --base "$work/syn1/base.fvecs" --queries "$work/syn1/query.fvecs" \
  --metric l2 --nlist 8 --dir "$work/nodir"

echo "cli: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
