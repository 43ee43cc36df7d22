#!/usr/bin/python3
"""Same-run comparison of tqvec with FAISS on identical data.

FAISS's 4-bit PQ fast scan (IndexPQFastScan, one 4-bit sub-quantizer per
coordinate group so that bytes per vector equal tqvec's at the same bits) and
its 4-bit scalar quantizer (IndexScalarQuantizer QT_4bit) are built and
searched on one thread, --batch queries per call (default 1), like `tqvec eval`, which this
script runs on the same files. Reports QPS, recall@10 and the QPS ratio.

Needs Debian's python3-faiss and python3-numpy (a benchmark dependency only:
nothing in the build or tests uses FAISS).

Usage: faiss_compare.py --tqvec build-release/tools/tqvec --base B.fvecs
       --queries Q.fvecs --gt G.ivecs --metric l2|ip [--bits 4] [--nq 200] [--batch 1]
       [--synthetic N,D  (writes random Gaussian base/queries, computes gt)]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

import faiss
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].view(dtype).copy()


def write_fvecs(path, x):
    n, d = x.shape
    out = np.empty((n, d + 1), dtype=np.int32)
    out[:, 0] = d
    out[:, 1:] = x.astype(np.float32).view(np.int32)
    out.tofile(path)


def recall_at_10(found, gt):
    return float(np.mean([len(set(f[:10]) & set(g[:10])) / 10.0 for f, g in zip(found, gt)]))


def time_search(index, queries, batch, k=10):
    """QPS and median per-query latency, searching batch queries per call."""
    lat, found = [], []
    for i in range(0, len(queries), batch):
        group = queries[i:i + batch]
        t0 = time.perf_counter()
        _, ids = index.search(group, k)
        t = time.perf_counter() - t0
        lat += [t / len(group)] * len(group)
        found += list(ids)
    return len(queries) / sum(lat), np.median(lat) * 1e6, found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tqvec", required=True)
    ap.add_argument("--base")
    ap.add_argument("--queries")
    ap.add_argument("--gt")
    ap.add_argument("--metric", choices=["l2", "ip"], default="l2")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1, help="queries per search call, for both engines")
    ap.add_argument("--synthetic", help="N,D: random Gaussian data instead of files")
    a = ap.parse_args()
    faiss.omp_set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="tqvec-peer-")
    try:
        return compare(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(a, tmp):
    if a.synthetic:
        n, d = (int(v) for v in a.synthetic.split(","))
        rng = np.random.default_rng(2504)
        base = rng.standard_normal((n, d), dtype=np.float32)
        queries = rng.standard_normal((a.nq, d), dtype=np.float32)
        a.base, a.queries = os.path.join(tmp, "base.fvecs"), os.path.join(tmp, "query.fvecs")
        write_fvecs(a.base, base)
        write_fvecs(a.queries, queries)
        flat = faiss.IndexFlatL2(d) if a.metric == "l2" else faiss.IndexFlatIP(d)
        flat.add(base)
        _, gt = flat.search(queries, 100)
        a.gt = os.path.join(tmp, "gt.ivecs")
        out = np.empty((a.nq, 101), dtype=np.int32)
        out[:, 0] = 100
        out[:, 1:] = gt
        out.tofile(a.gt)
    base = read_vecs(a.base, np.float32)
    queries = read_vecs(a.queries, np.float32)[: a.nq]
    gt = read_vecs(a.gt, np.int32)[: a.nq]
    n, d = base.shape
    metric = faiss.METRIC_L2 if a.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    rows = []

    # FAISS PQ fast scan at tqvec's bytes per vector: M 4-bit sub-quantizers.
    m = d * a.bits // 4
    while d % m:
        m -= 1
    peers = [("faiss PQ%dx4 fastscan" % m, faiss.IndexPQFastScan(d, m, 4, metric)),
             ("faiss SQ4", faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_4bit, metric))]
    for name, index in peers:
        t0 = time.perf_counter()
        index.train(base[: min(n, 50000)])
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.add(base)
        add_s = time.perf_counter() - t0
        qps, p50, found = time_search(index, queries, a.batch)
        rows.append((name, qps, p50, recall_at_10(found, gt), train_s, add_s))

    cmd = [a.tqvec, "eval", "--base", a.base, "--queries", a.queries, "--gt", a.gt, "--metric", a.metric,
           "--bits", str(a.bits), "--nq", str(a.nq), "--batch", str(a.batch), "--json", "-"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[0])
    rows.append(("tqvec %d-bit mse" % a.bits, r["qps"], r["p50_us"], r["recall_at_k"], 0.0, r["build_s"]))

    print("n=%d d=%d metric=%s queries=%d, %d per search call, one thread; FAISS %s built %s"
          % (n, d, a.metric, len(queries), a.batch, faiss.__version__, faiss.get_compile_options()))
    print("%-24s %10s %10s %9s %9s %9s" % ("index", "QPS", "p50 us", "R@10", "train s", "add s"))
    for name, qps, p50, rec, tr, ad in rows:
        print("%-24s %10.1f %10.1f %9.4f %9.2f %9.2f" % (name, qps, p50, rec, tr, ad))
    print("tqvec QPS / FAISS PQ fast scan QPS: %.2f" % (rows[2][1] / rows[0][1]))
    print("tqvec QPS / FAISS SQ4 QPS:          %.2f" % (rows[2][1] / rows[1][1]))


if __name__ == "__main__":
    sys.exit(main())
