#!/usr/bin/env python3
"""A worked retrieval example: the license texts every Debian system ships
(/usr/share/common-licenses, package base-files) are cut into passages,
embedded, indexed with tqvec, and searched with questions a reader of
those licenses might ask; the best passages are printed with their source.

The embedding is a deterministic hashed bag of words (unigrams and bigrams,
signed feature hashing, sublinear term frequency, unit length). It is a
PLACEHOLDER for a real embedding model: swap `HashingEmbedding` for any
object with embed_documents/embed_query (a sentence-transformers or
LangChain Embeddings model) and nothing else changes.

usage: rag_licenses.py [--server HOST:PORT] [--dir DIR] [-k 3] [QUESTION ...]
  without --server the index lives in this process (in DIR, default a
  temporary directory); with --server it is the vector set "licenses" on a
  running tqvecd, through redis-py.
"""
import argparse
import hashlib
import math
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tqvec.vectorstore import TqvecVectorStore  # noqa: E402

CORPUS = "/usr/share/common-licenses"
FILES = ["GPL-3", "LGPL-3", "Apache-2.0", "MPL-2.0", "BSD", "Artistic", "CC0-1.0", "GFDL-1.3"]
QUESTIONS = [
    "Can I distribute modified versions of the program?",
    "What happens to my patent license if I sue someone for infringement?",
    "Is there any warranty, and who pays for repairs if the program is defective?",
    "Must I include a copy of the license when I redistribute?",
]


class HashingEmbedding:
    """Hashed bag of words: a stand-in for a learned embedding model."""

    def __init__(self, dim=1024):
        self.dim = dim

    def _features(self, text):
        words = re.findall(r"[a-z0-9]+", text.lower())
        return words + [a + " " + b for a, b in zip(words, words[1:])]

    def _embed(self, text):
        v = np.zeros(self.dim, dtype=np.float32)
        counts = {}
        for f in self._features(text):
            counts[f] = counts.get(f, 0) + 1
        for f, n in counts.items():
            h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += (1.0 if (h >> 63) else -1.0) * (1.0 + math.log(n))
        norm = float(np.linalg.norm(v))
        if norm == 0:
            v[0] = 1.0  # an empty passage still needs a direction under cosine
            norm = 1.0
        return v / norm

    def embed_documents(self, texts):
        return np.stack([self._embed(t) for t in texts])

    def embed_query(self, text):
        return self._embed(text)


def passages(path, target=700):
    """Paragraphs merged up to about `target` characters."""
    text = open(path, encoding="utf-8", errors="replace").read()
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    chunk = ""
    for p in paras:
        if not p:
            continue
        if chunk and len(chunk) + len(p) > target:
            yield chunk
            chunk = ""
        chunk = (chunk + " " + p).strip()
    if chunk:
        yield chunk


def build(store):
    texts, metas, ids = [], [], []
    for name in FILES:
        path = os.path.join(CORPUS, name)
        if not os.path.exists(path):
            continue
        for i, p in enumerate(passages(path)):
            texts.append(p)
            metas.append({"source": name, "passage": i})
            ids.append("%s#%d" % (name, i))
    store.add_texts(texts, metadatas=metas, ids=ids)
    return len(texts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", help="HOST:PORT of a running tqvecd (uses redis-py)")
    ap.add_argument("--dir", help="collection directory for the in-process store")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("questions", nargs="*")
    args = ap.parse_args(argv)
    embedding = HashingEmbedding()
    if args.server:
        import redis
        host, _, port = args.server.rpartition(":")
        client = redis.Redis(host=host or "127.0.0.1", port=int(port))
        client.delete("licenses")
        store = TqvecVectorStore.from_redis(client, "licenses", embedding, quant="NOQUANT")
    else:
        store = TqvecVectorStore.open(args.dir or tempfile.mkdtemp(prefix="tqvec-licenses-"), embedding)
    n = build(store)
    print("indexed %d passages from %s (%s)" % (n, CORPUS, ", ".join(FILES)))
    for q in args.questions or QUESTIONS:
        print("\nQ: %s" % q)
        for doc, score in store.similarity_search_with_score(q, k=args.k):
            text = doc.page_content if len(doc.page_content) < 220 else doc.page_content[:217] + "..."
            print("  %.3f  [%s]  %s" % (score, doc.id, text))
    print("\nQ (only the GPL-3): %s" % QUESTIONS[0])
    for doc, score in store.similarity_search_with_score(QUESTIONS[0], k=2, filter={"source": "GPL-3"}):
        print("  %.3f  [%s]  %s..." % (score, doc.id, doc.page_content[:150]))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
