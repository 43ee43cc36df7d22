#!/usr/bin/env python3
"""What the Python binding costs over the C API, measured in one run.

  ingest: Collection.add in batches of 1,000 (keys "row-<i>", no attributes,
          ip metric, 4 bits) against `tqvec bench store`, which does the same
          through tqvec_collection_add from C (alternating, 3 rounds)
  search: Collection.search one query at a time (k=10) against
          `tqvec bench server --local`, the same searches from C, on the
          same collection directory and the same queries, alternating for
          5 rounds; the difference of the per-query times is the binding's
          overhead. Measured on a small collection (--search-n, default
          1,000) so the C time is short and machine noise does not swamp
          a difference of microseconds.

usage: bench_binding.py [--dim 384] [-n 100000] [--search-n 1000] [--nq 20000] [--tqvec PATH]
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
os.environ.setdefault("TQVEC_LIBRARY", os.path.join(ROOT, "build-release", "src", "libtqvec.so"))
import tqvec  # noqa: E402


def write_fvecs(path, x):
    with open(path, "wb") as f:
        for row in x:
            f.write(struct.pack("<i", len(row)) + row.astype("<f4").tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--search-n", type=int, default=1000)
    ap.add_argument("--nq", type=int, default=20000)
    ap.add_argument("--tqvec", default=os.path.join(ROOT, "build-release", "tools", "tqvec"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tqvec-pybench-")
    try:
        # ingest: C (`tqvec bench store`, its own median of 3) and Python
        # (3 runs) alternately, 3 rounds; the ratio of the medians
        rng = np.random.default_rng(42)
        x = rng.standard_normal((a.n, a.dim)).astype(np.float32)
        keys = ["row-%d" % i for i in range(a.n)]
        c_rates, py_rates = [], []
        path = os.path.join(work, "py")
        for _ in range(3):
            out = subprocess.run([a.tqvec, "bench", "store", "--dim", str(a.dim), "--bits", "4", "-n", str(a.n),
                                  "--queries", "1", "--dir", work], capture_output=True, text=True,
                                 check=True).stdout
            c_rates.append(float(re.search(r"ingest\s+(\d+) vectors/s stored", out).group(1)))
            for _ in range(3):
                shutil.rmtree(path, ignore_errors=True)
                with tqvec.Collection.create(path, dim=a.dim, metric="ip", bits=4) as c:
                    t0 = time.perf_counter()
                    for i in range(0, a.n, 1000):
                        c.add(keys[i:i + 1000], x[i:i + 1000])
                    py_rates.append(a.n / (time.perf_counter() - t0))
        c_vps, py_vps = sorted(c_rates)[1], sorted(py_rates)[len(py_rates) // 2]
        print("ingest d=%d n=%d batches of 1000: Python %.0f vectors/s, C %.0f vectors/s: ratio %.2f"
              % (a.dim, a.n, py_vps, c_vps, py_vps / c_vps))

        # search, alternating C and Python on the same directory and queries
        spath = os.path.join(work, "search")
        with tqvec.Collection.create(spath, dim=a.dim, metric="ip", bits=4) as c:
            c.add(keys[:a.search_n], x[:a.search_n])
            c.compact()
        q = rng.standard_normal((a.nq, a.dim)).astype(np.float32)
        qpath = os.path.join(work, "q.fvecs")
        write_fvecs(qpath, q)
        c_us, py_us = [], []
        for _ in range(5):
            out = subprocess.run([a.tqvec, "bench", "server", "--local", spath, "--queries", qpath, "--k", "10",
                                  "--rerank", "0", "--clients", "1"], capture_output=True, text=True,
                                 check=True).stdout
            c_us.append(1e6 / float(re.search(r"QPS \(median of \d+\) (\d+)", out).group(1)))
            with tqvec.Collection.open(spath) as c:
                c.search(q[0], k=10)  # the first search checksums the segment: keep it out
                rows = list(q)
                t0 = time.perf_counter()
                for row in rows:
                    c.search(row, k=10)
                py_us.append((time.perf_counter() - t0) * 1e6 / a.nq)
        c_med, py_med = sorted(c_us)[2], sorted(py_us)[2]
        print("search d=%d n=%d k=10, one query per call: Python %.1f us, C %.1f us: overhead %.1f us per query"
              % (a.dim, a.search_n, py_med, c_med, py_med - c_med))
        print("  rounds C %s  Python %s" % (" ".join("%.1f" % v for v in c_us), " ".join("%.1f" % v for v in py_us)))
        # The same difference measured query by query in one process, which
        # machine noise between processes cannot skew: the bare C calls
        # (search and free, through ctypes with every argument prepared)
        # against Collection.search, alternating; median of the differences.
        with tqvec.Collection.open(spath) as c:
            from tqvec import _results_free, _search, _scratch_tls as sc
            sc.params.k, sc.params.rerank, sc.params.scorer, sc.params.threads, sc.params.filter = 10, 0, 0, 0, None
            addrs = [row.ctypes.data for row in rows]
            diffs, bare = [], []
            clock = time.perf_counter_ns
            for row, addr in zip(rows, addrs):
                t0 = clock()
                _search(c._h, addr, 1, sc.params_ref, sc.res_ref, sc.err_ref)
                _results_free(sc.res.value)
                t1 = clock()
                c.search(row, k=10)
                t2 = clock()
                bare.append((t1 - t0) / 1e3)
                diffs.append((t2 - t1 - (t1 - t0)) / 1e3)
        diffs.sort()
        bare.sort()
        print("  same process, query by query: bare C call %.1f us, Collection.search adds %.1f us (median; p90 %.1f)"
              % (bare[len(bare) // 2], diffs[len(diffs) // 2], diffs[len(diffs) * 9 // 10]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
