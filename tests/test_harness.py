#!/usr/bin/env python3
"""The evaluation harness end to end: `tqvec eval` sweeps on generated data,
its JSON records checked against tools/eval-record.schema.json, its SVG plots
rendered by a real renderer (rsvg-convert) and looked at, its reports, and
ann-benchmarks HDF5 input (good and damaged) giving the same figures as the
same data in .npy files.

usage: test_harness.py TQVEC SCHEMA   (exit 77 = skipped, for meson)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import jsonschema
from PIL import Image

TQVEC, SCHEMA = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def tqvec(*args, ok=True):
    r = subprocess.run([TQVEC, *args], capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise SystemExit("tqvec %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
    return r


def write_npy(path, a):
    np.save(path, np.ascontiguousarray(a, dtype=np.float32))


def exact_neighbors(base, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int32)


tmp = tempfile.mkdtemp(prefix="tqvec-harness-")
try:
    rng = np.random.default_rng(7)
    # Clustered data, so recall varies with bits and re-rank depth.
    centers = rng.normal(size=(20, 48))
    base = (centers[rng.integers(0, 20, 3000)] + 0.35 * rng.normal(size=(3000, 48))).astype(np.float32)
    queries = (centers[rng.integers(0, 20, 60)] + 0.35 * rng.normal(size=(60, 48))).astype(np.float32)
    bp, qp = os.path.join(tmp, "base.npy"), os.path.join(tmp, "query.npy")
    write_npy(bp, base)
    write_npy(qp, queries)

    # ---- a sweep: JSON lines against the schema, and their coherence
    out, rep = os.path.join(tmp, "out.jsonl"), os.path.join(tmp, "report")
    args = ["eval", "--base", bp, "--queries", qp, "--metric", "l2", "--bits", "2,4", "--rerank", "0,8",
            "-k", "1,10", "--clients", "1,2", "--name", "blobs", "--json", out, "--report", rep]
    r = tqvec(*args)
    check("Pareto frontier" in r.stdout, "the terminal table ends with the Pareto frontier")
    schema = json.load(open(SCHEMA))
    records = [json.loads(line) for line in open(out)]
    check(len(records) == 2 * 2 * 2 * 2, "one record per sweep point (%d)" % len(records))
    for rec in records:
        try:
            jsonschema.validate(rec, schema)
        except jsonschema.ValidationError as e:
            check(False, "schema: %s" % e.message)
    check(all(rec["command"] == "tqvec " + " ".join(args) for rec in records), "the exact command line")
    check(len({rec["dataset_checksum"] for rec in records}) == 1, "one checksum per run")
    for rec in records:
        check(rec["recall_1_at_k"] >= rec["recall_at_1"] - 1e-12, "R1@k >= R@1")
        check(rec["recall_at_k_dist"] >= rec["recall_at_k"] - 1e-12, "ties only add: R@k dist >= R@k")
        if rec["k"] == 1:
            check(abs(rec["recall_at_k"] - rec["recall_at_1"]) < 1e-12, "k=1: R@k == R@1")
        check(rec["p50_us"] <= rec["p95_us"] <= rec["p99_us"], "percentiles ordered")
        check(rec["peak_rss_bytes"] > 1 << 20, "peak RSS measured")
    # the Pareto flags are the frontier of each k, recomputed here
    for k in (1, 10):
        pts = [rec for rec in records if rec["k"] == k]
        for a in pts:
            beaten = any(b["recall_at_k"] >= a["recall_at_k"] and b["qps"] >= a["qps"] and
                         (b["recall_at_k"] > a["recall_at_k"] or b["qps"] > a["qps"]) for b in pts)
            check(a["pareto"] == (not beaten), "pareto flag k=%d" % k)
    # more bits or deeper re-rank: recall does not fall (same seed, same data)
    by = {(rec["bits"], rec["rerank"], rec["k"], rec["clients"]): rec for rec in records}
    check(by[(4, 0, 10, 1)]["recall_at_k"] >= by[(2, 0, 10, 1)]["recall_at_k"], "4 bits >= 2 bits")
    check(by[(2, 8, 10, 1)]["recall_at_k"] >= by[(2, 0, 10, 1)]["recall_at_k"], "re-rank 8 >= 0")
    check(by[(2, 0, 10, 1)]["recall_at_k"] == by[(2, 0, 10, 2)]["recall_at_k"], "clients do not change answers")
    check(by[(4, 0, 10, 1)]["bytes_per_vector"] > by[(2, 0, 10, 1)]["bytes_per_vector"] >= 48 * 2 // 8,
          "bytes per vector grow with bits")
    # a second run on the same data has the same checksum; other data another
    r2 = tqvec("eval", "--base", bp, "--queries", qp, "--metric", "l2", "--json", "-")
    rec2 = json.loads(r2.stdout.splitlines()[0])
    check(rec2["dataset_checksum"] == records[0]["dataset_checksum"], "checksum stable")
    write_npy(os.path.join(tmp, "query2.npy"), queries[:59])
    r3 = tqvec("eval", "--base", bp, "--queries", os.path.join(tmp, "query2.npy"), "--metric", "l2", "--json", "-")
    check(json.loads(r3.stdout.splitlines()[0])["dataset_checksum"] != rec2["dataset_checksum"],
          "checksum follows the data")

    # ---- duplicates in the base: ids of tied neighbours are arbitrary, the
    # distance-threshold recall is not fooled by them
    dup = np.repeat(base[:500], 3, axis=0)
    dp = os.path.join(tmp, "dup.npy")
    write_npy(dp, dup)
    rd = json.loads(tqvec("eval", "--base", dp, "--queries", qp, "--metric", "l2", "--bits", "4", "--refine",
                          "fp32", "--rerank", "16", "--json", "-").stdout.splitlines()[0])
    check(rd["recall_at_k_dist"] == 1.0, "exact re-rank on duplicates: distance recall 1 (%s)" % rd["recall_at_k_dist"])
    check(rd["recall_at_k"] <= rd["recall_at_k_dist"], "id recall never above distance recall")

    # ---- the report: SVGs render, pages reference or inline them
    svgs = sorted(f for f in os.listdir(rep) if f.endswith(".svg"))
    check(svgs == ["blobs-k1.svg", "blobs-k10.svg"], "one plot per k: %s" % svgs)
    renderer = shutil.which("rsvg-convert")
    if not renderer:
        check(os.environ.get("CI") != "true", "rsvg-convert is installed in CI")
        print("SKIP: rendering (no rsvg-convert)")
    for svg in svgs if renderer else []:
        png = os.path.join(tmp, svg + ".png")
        rr = subprocess.run([renderer, os.path.join(rep, svg), "-o", png], capture_output=True, text=True)
        check(rr.returncode == 0, "%s renders: %s" % (svg, rr.stderr))
        img = Image.open(png).convert("RGB")
        check(img.size == (900, 520), "%s size %s" % (svg, img.size))
        px = np.asarray(img).reshape(-1, 3).astype(int)
        ink = (px.sum(1) < 600).mean()
        check(0.005 < ink < 0.5, "%s has drawing on it (%.3f of pixels)" % (svg, ink))
        # the first curve's colour (#1f77b4) and the second's (#d62728) appear
        for colour in ((0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28)):
            near = (np.abs(px - np.array(colour)).sum(1) < 40).sum()
            check(near > 50, "%s shows curve colour %s (%d px)" % (svg, colour, near))
    md = open(os.path.join(rep, "blobs.md")).read()
    html = open(os.path.join(rep, "blobs.html")).read()
    check("](blobs-k10.svg)" in md and "| Pareto |" in md, "markdown links the plot and has the table")
    check(html.count("<svg") == 2 and "src=" not in html, "HTML is self-contained (plots inline)")
    check(len(open(os.path.join(rep, "blobs.jsonl")).read().splitlines()) == len(records), "report JSON lines")

    # ---- tqvec report: two stored runs merged onto one plot
    before, after = os.path.join(tmp, "before.jsonl"), os.path.join(tmp, "after.jsonl")
    shutil.copy(out, before)
    tqvec("eval", "--base", bp, "--queries", qp, "--metric", "l2", "--bits", "3", "--rerank", "0,8",
          "--name", "blobs", "--json", after)
    merged = os.path.join(tmp, "merged")
    r = tqvec("report", "--out", merged, before, after)
    mrecs = [json.loads(line) for line in open(os.path.join(merged, "blobs.jsonl"))]
    check(len(mrecs) == len(records) + 2, "merged records: %d" % len(mrecs))
    for rec in mrecs:
        try:
            jsonschema.validate(rec, schema)
        except jsonschema.ValidationError as e:
            check(False, "merged record schema: %s" % e.message)
    # a record keeps its own run's command and seed (64-bit, exact)
    check({rec["command"] for rec in mrecs} == {records[0]["command"], "tqvec eval --base %s --queries %s "
          "--metric l2 --bits 3 --rerank 0,8 --name blobs --json %s" % (bp, qp, after)}, "commands kept")
    check(all(rec["seed"] == records[0]["seed"] for rec in mrecs), "seed kept exactly")
    mmd = open(os.path.join(merged, "blobs.md")).read()
    check("Run **before**" in mmd and "Run **after**" in mmd, "both runs' provenance on the page")
    svg10 = open(os.path.join(merged, "blobs-k10.svg")).read()
    check(">before: 2 bit" in svg10 and ">after: 3 bit" in svg10, "curves named by run")
    if renderer:
        rr = subprocess.run([renderer, os.path.join(merged, "blobs-k10.svg"), "-o", os.path.join(tmp, "m.png")],
                            capture_output=True)
        check(rr.returncode == 0, "merged plot renders")
    # runs on different data, and a damaged line, are refused with a reason
    other = os.path.join(tmp, "other.jsonl")
    tqvec("eval", "--base", bp, "--queries", os.path.join(tmp, "query2.npy"), "--metric", "l2", "--name", "blobs",
          "--json", other)
    r = tqvec("report", "--out", merged, before, other, ok=False)
    check(r.returncode == 1 and "cannot share a plot" in r.stderr, "different data refused: %r" % r.stderr)
    lines = open(before).read().splitlines()
    damaged = os.path.join(tmp, "damaged.jsonl")
    open(damaged, "w").write("\n".join(lines[:3] + [lines[3][:-20]] + lines[4:]) + "\n")
    r = tqvec("report", "--out", merged, damaged, ok=False)
    check(r.returncode == 1 and "damaged.jsonl:4:" in r.stderr, "damaged line named: %r" % r.stderr)
    open(damaged, "w").write('{"dataset": "x"}\n')
    r = tqvec("report", "--out", merged, damaged, ok=False)
    check(r.returncode == 1 and "not a tqvec eval record" in r.stderr, "foreign record refused: %r" % r.stderr)

    # the peers' JSON lines (../shared/peers/peers.py) join a run on the same
    # data as curves of their own, one per method
    peers = os.path.join(tmp, "peers.jsonl")
    with open(peers, "w") as f:
        for ef, qps, rec in ((16, 9000.0, 0.8), (64, 4000.0, 0.95)):
            f.write(json.dumps({"run": "2026-12-01T00:00:00", "dataset": "blobs", "metric": "l2",
                                "n": records[0]["n"], "d": records[0]["d"], "nq": records[0]["nq"], "k": 10,
                                "method": "hnswlib.HNSW", "lib": "hnswlib", "family": "graph", "params": "M=32",
                                "setting": "ef=%d" % ef, "bits_per_dim": None, "build_s": 1.5, "build_threads": 2,
                                "search_threads": 1, "code_B": 4 * records[0]["d"], "index_B": 300.0, "qps": qps,
                                "batch_runs": 1, "p50_us": 1e6 / qps, "p99_us": 2e6 / qps, "recall@10": rec,
                                "recall1@10": rec}) + "\n")
    peered = os.path.join(tmp, "peered")
    tqvec("report", "--out", peered, before, peers)
    svgp = open(os.path.join(peered, "blobs-k10.svg")).read()
    check(">peers: peer:hnswlib.HNSW<" in svgp or ">peer:hnswlib.HNSW<" in svgp, "peer curve named by its method")
    pmd = open(os.path.join(peered, "blobs.md")).read()
    check("| peer:hnswlib.HNSW |" in pmd and "ef=64" in pmd, "peer rows in the table")
    open(damaged, "w").write('{"method": "x", "dataset": "blobs"}\n')
    r = tqvec("report", "--out", merged, damaged, ok=False)
    check(r.returncode == 1 and "not a peers.py record" in r.stderr, "incomplete peer line refused: %r" % r.stderr)

    # ---- ann-benchmarks HDF5: same figures as the same data as .npy
    try:
        import h5py
    except ImportError:
        h5py = None
    probe = tqvec("eval", "--base", os.path.join(tmp, "none.hdf5"), ok=False)
    if "without HDF5" in probe.stderr or h5py is None:
        check(os.environ.get("CI") != "true", "HDF5 support and h5py in CI")
        print("SKIP: HDF5 (%s)" % ("tqvec built without it" if h5py else "no h5py"))
    else:
        gt = exact_neighbors(base, queries, 100)
        hp = os.path.join(tmp, "blobs-48-euclidean.hdf5")
        with h5py.File(hp, "w") as f:
            f.attrs["distance"] = "euclidean"
            f.attrs["type"] = "dense"
            f.create_dataset("train", data=base)
            f.create_dataset("test", data=queries)
            f.create_dataset("neighbors", data=gt)
            f.create_dataset("distances", data=np.zeros(gt.shape, np.float32))
        a = json.loads(tqvec("eval", "--base", hp, "--bits", "3", "--json", "-").stdout.splitlines()[0])
        b = json.loads(tqvec("eval", "--base", bp, "--queries", qp, "--metric", "l2", "--bits", "3",
                             "--json", "-").stdout.splitlines()[0])
        check(a["metric"] == "l2" and a["n"] == 3000 and a["nq"] == 60, "metric and sizes from the file")
        for f in ("recall_at_1", "recall_at_k", "recall_1_at_k"):
            check(a[f] == b[f], "HDF5 %s %s == npy %s" % (f, a[f], b[f]))
        # damaged: truncated, and not HDF5 at all -- a message, exit 1
        raw = open(hp, "rb").read()
        for name, data in (("cut.hdf5", raw[: len(raw) // 3]), ("junk.hdf5", b"\x00" * 4096)):
            p = os.path.join(tmp, name)
            open(p, "wb").write(data)
            r = tqvec("eval", "--base", p, ok=False)
            check(r.returncode == 1 and p in r.stderr, "%s: exit 1 naming the file, got %d %r" %
                  (name, r.returncode, r.stderr[-200:]))
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("harness: all checks passed")
