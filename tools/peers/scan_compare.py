#!/usr/bin/python3
"""Flat scan against the peers' flat scans at equal bytes per vector.

For each dataset folder (base.fvecs, query.fvecs, gt.ivecs; metric in its
README, as ../shared/peers/peers.py reads it), runs back to back on one
thread:
  1. peers.py --only for FAISS's fast scans of equal bytes: PQfs-4b (one 4-bit
     sub-quantizer per coordinate), PQfs-2b (one per two) and RaBitQfs-1b;
  2. tqvec eval at the same bits, no re-rank, k = 10: the whole query set in
     one call (peers' qps) and one query per call (peers' p50_us).
and prints one Markdown table of QPS, p50 and recall with the ratios.

The peers are the optimized builds in ../shared/peers (see its README);
Debian's python3-faiss is a generic build and is never used here.

Usage: tools/peers/scan_compare.py [--tqvec build-release/tools/tqvec]
       [--peers ../shared/peers/peers.py] [--bits 1,2,4] [--repeat R]
       [--out-dir DIR] DATASET_DIR [DATASET_DIR ...]
"""
import argparse, json, os, re, subprocess, sys, tempfile

PEER_OF_BITS = {4: "faiss.PQfs-4b", 2: "faiss.PQfs-2b", 1: "faiss.RaBitQfs-1b"}


def run_peers(args, folder, out_dir):
    wanted = "|".join(PEER_OF_BITS[b].replace(".", r"\.") for b in args.bits)
    cmd = [sys.executable if args.python is None else args.python, args.peers, folder,
           "--only", f"^({wanted})$", "--out-dir", out_dir]
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    name = os.path.basename(os.path.normpath(folder))
    rows = [json.loads(line) for line in open(os.path.join(out_dir, name + ".jsonl"))]
    return {r["method"]: r for r in rows}


def readme_metric(folder):
    """The metric the dataset's README names. The peers report cosine sets
    as ip (FAISS has no cosine: they normalize and take inner products);
    tqvec is run on the metric a user would pick, which for cosine centers
    the query as well as the codes."""
    try:
        text = open(os.path.join(folder, "README.md")).read()
    except OSError:
        return None
    m = re.search(r"metric\s*\|\s*\**\s*(l2|ip|cosine)", text)
    return m.group(1) if m else None


def run_tqvec(args, folder, metric, nq, batch):
    # Small query sets are repeated up to ~5,000 queries so the timing is
    # not a few milliseconds long (eval takes the median of the repeats).
    repeat = args.repeat or min(100, max(3, -(-5000 // nq)))
    cmd = [args.tqvec, "eval", "--base", os.path.join(folder, "base.fvecs"),
           "--queries", os.path.join(folder, "query.fvecs"), "--gt", os.path.join(folder, "gt.ivecs"),
           "--metric", metric, "--bits", ",".join(str(b) for b in args.bits), "--rerank", "0", "-k", "10",
           "--repeat", str(repeat), "--json", "-"]
    if batch:
        cmd += ["--batch", str(batch)]
    print("$", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["bits"]: r for r in map(json.loads, out.splitlines())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--tqvec", default="build-release/tools/tqvec")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                    "peers", "peers.py"))
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter the peers' modules are built for")
    ap.add_argument("--bits", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=0,
                    help="tqvec eval --repeat (median QPS); default: enough for ~5,000 queries, 3 to 100")
    ap.add_argument("--out-dir", default=None, help="keep the peers' JSON lines here")
    args = ap.parse_args()
    args.bits = [int(b) for b in args.bits.split(",")]
    if any(b not in PEER_OF_BITS for b in args.bits):
        sys.exit("scan_compare: --bits takes 1, 2 and 4 (the widths with an equal-bytes peer)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or tmp
        for folder in args.datasets:
            peers = run_peers(args, folder, out_dir)
            if not peers:
                sys.exit(f"scan_compare: no peer rows for {folder}")
            first = next(iter(peers.values()))
            metric, nq = readme_metric(folder) or first["metric"], first["nq"]
            batched = run_tqvec(args, folder, metric, nq, nq)
            single = run_tqvec(args, folder, metric, nq, 0)
            for b in args.bits:
                p = peers.get(PEER_OF_BITS[b])
                if p is None:
                    continue
                t, s = batched[b], single[b]
                rows.append((first["dataset"], f'{first["n"]}x{first["d"]}', b, PEER_OF_BITS[b], t["qps"], p["qps"],
                             s["p50_us"], p["p50_us"], t["recall_at_k"], p["recall@10"]))
    print("| dataset | n×d | bits | peer | tqvec qps | peer qps | ratio | tqvec p50 µs | peer p50 µs | p50 ratio "
          "| tqvec R@10 | peer R@10 |")
    print("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for ds, shape, b, peer, tq, pq, tp50, pp50, tr, pr in rows:
        print(f"| {ds} | {shape} | {b} | {peer} | {tq:,.0f} | {pq:,.0f} | {tq / pq:.2f} | {tp50:.1f} | {pp50:.1f} "
              f"| {pp50 / tp50:.2f} | {tr:.4f} | {pr:.4f} |")


if __name__ == "__main__":
    main()
