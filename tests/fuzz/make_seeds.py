#!/usr/bin/env python3
"""Write the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/): a few
small valid inputs per target, so fuzzing starts from real structure. The
store seeds are files of a real collection written through the Python
binding. Run from the source tree with a built libtqvec.so; the output is
checked in, so this only needs running when the formats change."""
import gzip
import hashlib
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "python"))
import numpy as np  # noqa: E402

import tqvec  # noqa: E402

OUT = os.path.join(HERE, "corpus")


def put(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    blob = struct.pack("<4f", 0.5, -1, 2, 0.25)
    put("resp", resp("PING") + resp("ECHO", "hi") + b"PING\r\nECHO \"a\\x41\" 'b'\r\n")
    put("resp", resp("VADD", "s", "VALUES", 3, 1, 0, 0, "a", "SETATTR", '{"year":1990}') +
        resp("VADD", "s", "VALUES", 3, 0, 1, 0, "b") + resp("VSIM", "s", "VALUES", 3, 1, 0, 0, "WITHSCORES",
                                                             "WITHATTRIBS", "COUNT", 5, "FILTER", ".year > 1"))
    put("resp", resp("VADD", "k", "FP32", blob, "e", "NOQUANT") + resp("VSIM", "k", "ELE", "e", "TRUTH", "EF", 10) +
        resp("VEMB", "k", "e", "RAW") + resp("VINFO", "k") + resp("VRANDMEMBER", "k", -3) + resp("VREM", "k", "e"))
    put("resp", resp("HELLO", 3) + resp("VSETATTR", "s", "a", "{}") + resp("VGETATTR", "s", "a") +
        resp("VISMEMBER", "s", "a") + resp("VCARD", "s") + resp("VDIM", "s"))
    put("resp", resp("TQ.CREATE", "t", "DIM", 4, "METRIC", "l2", "BITS", 2, "REFINE", "fp16") +
        resp("VADD", "t", "VALUES", 4, 1, 2, 3, 4, "x") + resp("TQ.COMPACT", "t") + resp("DEL", "t"))
    put("resp", resp("TQ.CREATE", "v", "DIM", 6, "BITS", 1, "CODEBOOK", "vector") +
        resp("VADD", "v", "VALUES", 6, 1, 2, 3, 4, 5, 6, "x") + resp("VSIM", "v", "ELE", "x") + resp("VINFO", "v"))
    put("resp", resp("INFO") + resp("DBSIZE") + resp("KEYS", "*") + resp("SCAN", 0, "MATCH", "s*") +
        resp("TYPE", "s") + resp("EXISTS", "s") + resp("CONFIG", "GET", "*") + resp("COMMAND", "COUNT") +
        resp("CLIENT", "SETNAME", "x") + resp("SELECT", 0) + resp("FLUSHALL"))
    # databases, names, expiry, serialization, introspection ([compat])
    put("resp", resp("SELECT", 9) + resp("VADD", "k", "VALUES", 2, 1, 0, "a") + resp("MOVE", "k", 0) +
        resp("SELECT", 0) + resp("RENAME", "k", "k2") + resp("RENAMENX", "k2", "k") + resp("COPY", "k2", "k3",
                                                                                             "DB", 3, "REPLACE") +
        resp("FLUSHDB") + resp("SWAPDB", 0, 1))
    put("resp", resp("VADD", "e", "VALUES", 2, 1, 0, "a") + resp("EXPIRE", "e", 100, "NX") + resp("TTL", "e") +
        resp("PEXPIRE", "e", 5, "GT") + resp("PTTL", "e") + resp("EXPIRETIME", "e") + resp("PERSIST", "e") +
        resp("EXPIREAT", "e", 1) + resp("EXISTS", "e"))
    put("resp", resp("VADD", "d", "FP32", blob, "x") + resp("DUMP", "d") +
        resp("RESTORE", "r", 0, b"TQVDUMP\0\x01\0\0\0\x01\0\0\0\x08\0MANIFEST" + bytes(16), "REPLACE") +
        resp("RESTORE", "r", 10, b"junk", "ABSTTL", "IDLETIME", 1, "FREQ", 2))
    put("resp", resp("VADD", "o", "REDUCE", 2, "VALUES", 4, 1, 2, 3, 4, "a") + resp("VADD", "p", "VALUES", 1, 3, "z") +
        resp("OBJECT", "ENCODING", "o") + resp("MEMORY", "USAGE", "o", "SAMPLES", 0) + resp("VRANGE", "o", "-", "+", 5) +
        resp("VRANGE", "o", "[a", "(b") + resp("VLINKS", "o", "a", "WITHSCORES") +
        resp("CONFIG", "SET", "loglevel", "debug", "maxclients", 10) + resp("VADD", "o", "VALUES", 4, 0, 0, 0, 0, ""))
    put("resp", resp("MULTI") + resp("VADD", "m", "VALUES", 2, 1, 0, "a") + resp("VADD", "m", "VALUES", 2, 0, 1, "b") +
        resp("VADD", "m", "VALUES", 3, 0, 1, 1, "c") + resp("EXEC") + resp("VADD", "m", "VALUES", 2, 1, 1, "d") +
        resp("VADD", "m", "VALUES", 2, 1, 2, "d", "SETATTR", "{}"))
    for expr, doc in ((".year > 1990 and .genre == 'drama'", '{"year":1999,"genre":"drama"}'),
                      ('.tags in ["a"] or not .ok', '{"tags":["a","b"],"ok":false}'),
                      ("(.a + .b * 2) % 3 == 1 && .s != \"x\"", '{"a":1,"b":"2","s":"y"}'),
                      ('"ab" in .name', '{"name":"xaby"}'), (".x ** 2 >= 4 || .n == null", '{"x":-2}')):
        put("filter", expr.encode() + b"\0" + doc.encode())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c")
        x = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
        # Segments of 16 rows, partitioned (format 4's partitions section).
        with tqvec.Collection.create(path, dim=8, segment_rows=16, fsync="no", partition_rows=16) as c:
            c.add(["k%d" % i for i in range(16)], x[:16], [{"i": i} for i in range(16)])
            c.add(["k%d" % i for i in range(16, 32)], x[16:32])
            c.remove(["k3", "k20"])
            c.add(["k%d" % i for i in range(32, 40)], x[32:40])
            c.wait_partitioned()
        for sub, kind in (("wal", 0), ("seg", 1)):
            for name in sorted(os.listdir(os.path.join(path, sub))):
                data = open(os.path.join(path, sub, name), "rb").read()
                put("store", bytes([3 if name.endswith(".del") else kind]) + data)
        put("store", bytes([2]) + open(os.path.join(path, "MANIFEST"), "rb").read())
    v = np.arange(24, dtype=np.float32).reshape(3, 8)
    put("datasets", bytes([0]) + b"".join(struct.pack("<i", 8) + r.tobytes() for r in v))
    put("datasets", bytes([1]) + b"".join(struct.pack("<i", 8) + r.astype("<i4").tobytes() for r in v))
    put("datasets", bytes([2]) + b"".join(struct.pack("<i", 8) + r.astype("u1").tobytes() for r in v))
    npy = tempfile.mktemp(suffix=".npy")
    np.save(npy, v)
    put("datasets", bytes([3]) + open(npy, "rb").read())
    os.unlink(npy)
    idx = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 2, 2) + bytes(range(8))
    put("datasets", bytes([4]) + idx)
    put("datasets", bytes([5]) + gzip.compress(idx, mtime=0))
    record = ('{"dataset": "glove-50", "dataset_checksum": "63cf536acfb9f6e5", "k": 10, "qps": 3031.5, '
              '"pareto": false, "target_where": null, "seed": 8391739247810670196, '
              '"command": "tqvec eval --name \\"a\\\\b\\" \\u00e9\\ud83d\\ude00"}')
    put("datasets", bytes([6]) + record.encode())
    for t in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, t))
        print("%-9s %2d seeds, %6d bytes" % (t, len(files), sum(os.path.getsize(os.path.join(OUT, t, f)) for f in files)))


if __name__ == "__main__":
    main()
