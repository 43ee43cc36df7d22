#!/usr/bin/env python3
"""End-to-end tests of tqvecd: the real daemon, driven by redis-cli (Debian's
redis-tools) and, for what redis-cli cannot send (binary FP32 blobs, broken
requests, exact RESP framing), by a raw socket.

usage: test_daemon.py TQVECD [TQVEC]
  TQVECD_PREFIX: words put before every daemon command line (tools/test
  runs a ThreadSanitizer build under "setarch <arch> -R").

Every test starts from its own daemon on a free port and a fresh data
directory, so tests do not depend on each other's state.
"""
import math
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TQVECD = os.path.abspath(sys.argv[1])
TQVEC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
REDIS_CLI = shutil.which("redis-cli")
PREFIX = os.environ.get("TQVECD_PREFIX", "").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A tqvecd process on a free port over a data directory."""

    def __init__(self, data=None, args=(), exe=None):
        self.data = data or tempfile.mkdtemp(prefix="tqvecd-test-")
        self.owns_data = data is None
        self.args = list(args)
        self.exe = PREFIX + (exe or [TQVECD])
        self.proc = None
        self.start()

    def start(self):
        self.port = free_port()
        self.log = open(os.path.join(self.data, "..", os.path.basename(self.data) + ".log"), "ab")
        self.proc = subprocess.Popen(self.exe + ["--dir", self.data, "--port", str(self.port)] + self.args,
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("tqvecd exited with %d at start" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("tqvecd did not start listening")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.log.close()

    def restart(self):
        """A clean stop (SIGTERM, exit status 0), then a start on the same data."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, "tqvecd exit status %d" % self.proc.returncode
        self.log.close()
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, "tqvecd exit status %d" % self.proc.returncode
            self.log.close()
        if self.owns_data:
            shutil.rmtree(self.data, ignore_errors=True)

    def cli(self, *args, resp3=False, password=None):
        cmd = [REDIS_CLI, "-p", str(self.port)]
        if resp3:
            cmd.append("-3")
        if password:
            cmd += ["-a", password, "--no-auth-warning"]
        out = subprocess.run(cmd + [str(a) for a in args], capture_output=True, timeout=30)
        return out.stdout.decode().rstrip("\n")

    def conn(self):
        return Conn(self.port)


class Conn:
    """A raw RESP connection; replies are parsed into Python values
    (errors as Err, RESP3 maps as dicts, doubles as floats)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, *args):
        self.send_raw(encode(args))

    def call(self, *args):
        self.send(*args)
        return self.reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Err(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._bytes(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if t == b"%":
            n = int(rest)
            out = {}
            for _ in range(n):
                k = self.reply()
                out[k] = self.reply()
            return out
        if t == b",":
            return float(rest)
        if t == b"#":
            return rest == b"t"
        if t == b"_":
            return None
        raise AssertionError("unexpected reply type %r" % line)

    def closed(self):
        """True if the server closed this connection."""
        try:
            self.s.settimeout(5)
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


class Err(str):
    pass


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, (int, float)):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def fp32(v):
    return struct.pack("<%df" % len(v), *v)


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def vectors(n, d, seed=1):
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(d)] for _ in range(n)]


def cosine(a, b):
    return sum(x * y for x, y in zip(unit(a), unit(b)))


# ------------------------------------------------------------------ tests


def test_server_commands(d):
    assert d.cli("PING") == "PONG"
    assert d.cli("PING", "hi") == "hi"
    assert d.cli("ECHO", "hello world") == "hello world"
    assert d.cli("SELECT", "0") == "OK"
    assert d.cli("SELECT", "15") == "OK"
    assert d.cli("SELECT", "16") == "ERR DB index is out of range"
    assert d.cli("NOSUCH", "a", "b") == "ERR unknown command 'nosuch', with args beginning with: 'a' 'b' "
    assert d.cli("ECHO") == "ERR wrong number of arguments for 'echo' command"
    assert d.cli("DBSIZE") == "0"
    assert d.cli("TYPE", "nope") == "none"
    c = d.conn()
    assert c.call("CLIENT", "SETNAME", "tester") == "OK"
    assert c.call("CLIENT", "GETNAME") == b"tester"
    assert isinstance(c.call("CLIENT", "ID"), int)
    assert c.call("CONFIG", "GET", "appendfsync") == [b"appendfsync", b"everysec"]
    assert c.call("CONFIG", "GET", "save") == [b"save", b""]
    assert c.call("COMMAND", "COUNT") >= 30
    info = c.call("INFO").decode()
    for section in ("# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Keyspace", "# Vectorsets"):
        assert section in info, section
    assert "used_memory:" in info and "connected_clients:1" in info
    assert c.call("INFO", "memory").decode().startswith("# Memory")
    assert c.call("QUIT") == "OK"
    assert c.closed()


def test_vadd_vsim_basics(d):
    assert d.cli("VADD", "s", "VALUES", 3, 1, 0, 0, "a", "SETATTR", '{"year":1990}') == "1"
    assert d.cli("VADD", "s", "VALUES", 3, 0, 1, 0, "b") == "1"
    assert d.cli("VADD", "s", "VALUES", 3, 0.9, 0.1, 0, "c", "SETATTR", '{"year":2000}') == "1"
    # an update replies 0 and keeps the attributes when SETATTR is absent
    assert d.cli("VADD", "s", "VALUES", 3, 1, 0, 0.01, "a") == "0"
    assert d.cli("VGETATTR", "s", "a") == '{"year":1990}'
    assert d.cli("VCARD", "s") == "3"
    assert d.cli("VDIM", "s") == "3"
    assert d.cli("TYPE", "s") == "vectorset"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0).split("\n") == ["a", "c", "b"]
    assert d.cli("VSIM", "s", "ELE", "b", "COUNT", 1) == "b"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "FILTER", ".year > 1995") == "c"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "FILTER", ".year >") == \
        "ERR syntax error in FILTER expression near: >"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "FILTER-EF", 10, "FILTER", ".year") .split("\n") == ["a", "c"]
    assert d.cli("VSIM", "nokey", "VALUES", 3, 1, 0, 0) == ""
    assert d.cli("VSIM", "s", "ELE", "zz") == "ERR element not found in set"
    assert d.cli("VSIM", "s", "VALUES", 2, 1, 0) == "ERR Vector dimension mismatch - got 2 but set has 3"
    assert d.cli("VSIM", "s", "XYZ", 1) == "ERR vector type must be ELE, FP32 or VALUES"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "BOGUS") == "ERR syntax error in VSIM command"
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "COUNT", 0) == "ERR invalid COUNT"
    # a COUNT beyond the set answers with what there is, as Redis does
    assert d.cli("VSIM", "s", "VALUES", 3, 1, 0, 0, "COUNT", 10 ** 9).split("\n") == ["a", "c", "b"]
    assert d.cli("VADD", "s", "VALUES", 2, 1, 0, "x") == "ERR Vector dimension mismatch - got 2 but set has 3"
    assert d.cli("VADD", "s", "VALUES", 3, 1, 0, "x") == "ERR invalid vector specification"
    assert d.cli("VADD", "s", "VALUES", 3, 1, 0, 0, "x", "WHAT") == "ERR invalid option after element"
    assert d.cli("VADD", "s", "VALUES", 3, 1, 0, 0, "x", "NOQUANT") == \
        "ERR asked quantization mismatch with existing vector set"
    assert d.cli("VADD", "s", "REDUCE", 2, "VALUES", 3, 1, 0, 0, "x").startswith("ERR REDUCE 2 does not match")
    # HNSW-only options are accepted and ignored
    assert d.cli("VADD", "s", "VALUES", 3, 0, 0, 1, "d", "CAS", "EF", 200, "M", 16, "Q8") == "1"
    assert d.cli("VCARD", "s") == "4"


def test_scores_epsilon_truth(d):
    vs = vectors(200, 16, seed=3)
    c = d.conn()
    for i, v in enumerate(vs):
        assert c.call("VADD", "t", "FP32", fp32(v), "e%d" % i, "NOQUANT") == 1
    q = vs[7]
    r = c.call("VSIM", "t", "FP32", fp32(q), "WITHSCORES", "COUNT", 5, "TRUTH")
    names, scores = r[0::2], [float(s) for s in r[1::2]]
    assert names[0] == b"e7" and abs(scores[0] - 1.0) < 1e-4, r
    # TRUTH with fp32 refine data is exact: compare with cosine here
    want = sorted(range(200), key=lambda i: -cosine(q, vs[i]))[:5]
    assert names == [b"e%d" % i for i in want], (names, want)
    for n, s in zip(names, scores):
        i = int(n[1:])
        assert abs(s - (1 + cosine(q, vs[i])) / 2) < 1e-4
    assert scores == sorted(scores, reverse=True)
    # EPSILON keeps scores >= 1 - eps
    r = c.call("VSIM", "t", "FP32", fp32(q), "WITHSCORES", "COUNT", 50, "EPSILON", 0.4)
    assert all(float(s) >= 0.6 - 1e-6 for s in r[1::2]) and 0 < len(r) < 100
    # RERANK (extension) and EF are accepted; EF 1 is one candidate per result
    assert c.call("VSIM", "t", "FP32", fp32(q), "COUNT", 3, "RERANK", 0)[0] == b"e7"
    assert c.call("VSIM", "t", "FP32", fp32(q), "COUNT", 3, "EF", 500)[0] == b"e7"
    assert c.call("VSIM", "t", "FP32", fp32(q), "RERANK", 99999).startswith("ERR invalid RERANK")


def test_filter_returns_every_match(d):
    """FILTER runs inside the scan: min(COUNT, matching) results at any
    selectivity, where a graph search would come back short."""
    vs = vectors(3000, 12, seed=17)
    c = d.conn()
    c.send_raw(b"".join(encode(("VADD", "f", "FP32", fp32(v), "e%d" % i, "SETATTR",
                                '{"g":%d,"tag":"%s"}' % (i % 1000, "odd" if i % 2 else "even")))
                        for i, v in enumerate(vs)))
    assert [c.reply() for _ in vs] == [1] * len(vs)
    for expr, matching in ((".g == 7", 3), (".g < 10", 30), ('.tag == "odd" and .g >= 990', 15),
                           (".g in [1, 2, 3]", 9), (".missing > 1", 0), ("(.g + 1) % 500 == 0", 6)):
        r = c.call("VSIM", "f", "FP32", fp32(vs[0]), "COUNT", 20, "WITHATTRIBS", "FILTER", expr, "FILTER-EF", 1)
        names = r[0::2]
        assert len(names) == min(20, matching), (expr, len(names))
        assert len(set(names)) == len(names)
    r = c.call("VSIM", "f", "FP32", fp32(vs[0]), "COUNT", 5, "WITHATTRIBS", "FILTER", ".g == 7")
    assert all(b'"g":7,' in a for a in r[1::2]), r


def test_resp3(d):
    d.cli("VADD", "s", "VALUES", 2, 1, 0, "a", "SETATTR", '{"k":1}')
    d.cli("VADD", "s", "VALUES", 2, 0, 1, "b")
    c = d.conn()
    hello = c.call("HELLO", 3)
    assert hello[b"proto"] == 3 and hello[b"server"] == b"tqvecd"
    r = c.call("VSIM", "s", "VALUES", 2, 1, 0, "WITHSCORES")
    assert isinstance(r, dict) and set(r) == {b"a", b"b"} and isinstance(r[b"a"], float)
    r = c.call("VSIM", "s", "VALUES", 2, 1, 0, "WITHSCORES", "WITHATTRIBS")
    assert r[b"a"][1] == b'{"k":1}' and r[b"b"][1] is None and r[b"a"][0] > r[b"b"][0]
    assert c.call("VSIM", "s", "VALUES", 2, 1, 0) == [b"a", b"b"]
    assert c.call("VISMEMBER", "s", "a") is True
    assert c.call("VISMEMBER", "s", "zz") is False
    assert c.call("VGETATTR", "s", "b") is None
    assert isinstance(c.call("VINFO", "s"), dict)
    assert c.call("VINFO", "nokey") is None
    assert c.call("HELLO", 4).startswith("NOPROTO")
    r = c.call("HELLO", 2)  # RESP2: the map as a flat array
    assert dict(zip(r[0::2], r[1::2]))[b"proto"] == 2
    assert c.call("VISMEMBER", "s", "a") == 1
    # redis-cli speaks RESP3 too
    out = d.cli("VSIM", "s", "VALUES", 2, 1, 0, "WITHSCORES", resp3=True)
    assert out.startswith("1# \"a\" => ") or out.startswith("a "), out


def test_binary_blobs_and_keys(d):
    c = d.conn()
    key = b"bin\x00key/../x"
    elem = b"\xff\x00elem\r\n"
    assert c.call("VADD", key, "FP32", fp32([0.5, -1.5, 2.0, 0.25]), elem, "NOQUANT") == 1
    assert c.call("VSIM", key, "FP32", fp32([0.5, -1.5, 2.0, 0.25]), "COUNT", 1) == [elem]
    # VEMB gives the vector at the scale it was added with, as Redis
    emb = [float(x) for x in c.call("VEMB", key, elem)]
    want = [0.5, -1.5, 2.0, 0.25]
    assert all(abs(a - b) < 1e-6 for a, b in zip(emb, want)), emb
    raw = c.call("VEMB", key, elem, "RAW")
    assert raw[0] == "tq4+fp32" and all(abs(a - b) < 1e-6 for a, b in zip(struct.unpack("<4f", raw[1]), want))
    assert abs(float(raw[2]) - math.sqrt(sum(x * x for x in want))) < 1e-5
    assert c.call("VEMB", key, "nope") is None
    assert c.call("VEMB", "nokey", elem) is None
    assert c.call("VEMB", key, elem, "BAD") == "ERR invalid option"
    assert c.call("EXISTS", key) == 1
    # keys never become paths: only the lock file, the transaction log and
    # v-<hex> directories
    for name in os.listdir(d.data):
        assert name in ("tqvecd.lock", "tqvecd.txlog") or (
            name.startswith("v-") and all(ch in "0123456789abcdef" for ch in name[2:])), name
    assert c.call("KEYS", "*") == [key]
    assert c.call("VADD", "k" * 101, "VALUES", 2, 1, 0, "a").startswith("ERR a vector set's key is 1 to 100 bytes")
    # bad values: NaN in a blob, NaN as text, a blob of a partial float
    assert c.call("VADD", key, "FP32", fp32([float("nan"), 0, 0, 1]), "n").startswith("ERR ")
    assert c.call("VADD", key, "VALUES", 4, "nan", 0, 0, 1, "n") == "ERR invalid vector specification"
    assert c.call("VADD", key, "FP32", b"\x00\x00\x80", "odd") == "ERR invalid vector specification"
    assert c.call("VCARD", key) == 1
    # the empty name is a name like any other, as in Redis
    assert c.call("VADD", key, "FP32", fp32([1, 1, 1, 1]), "", "SETATTR", '{"e":1}') == 1
    assert c.call("VISMEMBER", key, "") == 1 and c.call("VGETATTR", key, "") == b'{"e":1}'
    assert c.call("VSIM", key, "ELE", "", "COUNT", 1) == [b""]
    assert c.call("VREM", key, "") == 1 and c.call("VISMEMBER", key, "") == 0
    # a zero vector under cosine is stored, as Redis does, and scores 0.5
    # (cosine 0) against any query
    assert c.call("VADD", key, "FP32", fp32([0, 0, 0, 0]), "z") == 1
    got = c.call("VSIM", key, "VALUES", 4, 1, 2, 3, 4, "WITHSCORES")
    assert got[0] == elem and got[2:] == [b"z", b"0.5"], got
    assert [float(x) for x in c.call("VEMB", key, "z")] == [0.0, 0.0, 0.0, 0.0]
    # an element searched with its own vector scores 1 on NOQUANT sets (exact
    # re-rank), as in Redis
    assert c.call("VSIM", key, "ELE", elem, "WITHSCORES", "COUNT", 1) == [elem, b"1"]
    # Q8 (the default) too gives the vector back at its scale, approximately
    assert c.call("VADD", "scaled", "VALUES", 3, 10, 20, 30, "e") == 1
    emb = [float(x) for x in c.call("VEMB", "scaled", "e")]
    assert all(abs(a - b) < 0.3 for a, b in zip(emb, [10, 20, 30])), emb
    assert c.call("VSIM", key, "VALUES", 4, 0, 0, 0, 0).startswith("ERR ")  # a zero query has no direction


def test_small_commands(d):
    vs = vectors(50, 8, seed=5)
    c = d.conn()
    for i, v in enumerate(vs):
        c.call("VADD", "r", "FP32", fp32(v), "m%d" % i, "SETATTR", '{"i":%d}' % i)
    assert c.call("VCARD", "r") == 50
    assert c.call("VCARD", "nokey") == 0
    assert c.call("VDIM", "nokey") == "ERR key does not exist"
    assert c.call("VISMEMBER", "r", "m3") == 1 and c.call("VISMEMBER", "r", "m99") == 0
    assert c.call("VISMEMBER", "nokey", "m3") == 0
    # VSETATTR keeps the vector: the element still finds itself first
    before = c.call("VEMB", "r", "m4")
    assert c.call("VSETATTR", "r", "m4", '{"i":400}') == 1
    assert c.call("VEMB", "r", "m4") == before
    assert c.call("VGETATTR", "r", "m4") == b'{"i":400}'
    assert c.call("VSIM", "r", "ELE", "m4", "FILTER", ".i == 400") == [b"m4"]
    assert c.call("VSETATTR", "r", "m4", "") == 1 and c.call("VGETATTR", "r", "m4") is None
    assert c.call("VSETATTR", "r", "m999", "{}") == 0
    assert c.call("VSETATTR", "nokey", "m1", "{}") == 0
    assert c.call("VGETATTR", "nokey", "m1") is None
    # VRANDMEMBER: one, distinct, with repeats, missing key
    assert c.call("VRANDMEMBER", "r").startswith(b"m")
    distinct = c.call("VRANDMEMBER", "r", 20)
    assert len(distinct) == 20 and len(set(distinct)) == 20
    assert len(c.call("VRANDMEMBER", "r", 500)) == 50
    rep = c.call("VRANDMEMBER", "r", -200)
    assert len(rep) == 200 and len(set(rep)) < 200
    assert c.call("VRANDMEMBER", "r", 0) == []
    assert c.call("VRANDMEMBER", "nokey") is None
    assert c.call("VRANDMEMBER", "nokey", 5) == []
    info = c.call("VINFO", "r")
    info = dict(zip(info[0::2], info[1::2]))
    assert info["size"] == 50 and info["vector-dim"] == 8 and info["metric"] == "cosine"
    assert info["quant-type"] == "int8" and info["encoding"] == "tq4+code8"
    assert info["attributes-count"] == 49 and info["max-level"] == 0 and info["hnsw-m"] == 0
    assert info["projection-input-dim"] == 0 and info["vset-uid"] >= 1 and info["hnsw-max-node-uid"] >= 50
    # VREM; removing the last element removes the key, as in Redis
    assert c.call("VREM", "r", "m0") == 1 and c.call("VREM", "r", "m0") == 0
    assert c.call("VREM", "nokey", "m0") == 0
    for i in range(1, 50):
        assert c.call("VREM", "r", "m%d" % i) == 1
    assert c.call("EXISTS", "r") == 0 and c.call("DBSIZE") == 0
    assert c.call("VADD", "r", "VALUES", 3, 1, 2, 3, "new") == 1  # a new set, any dimension
    assert c.call("VDIM", "r") == 3


def test_keyspace_and_persistence_commands(d):
    c = d.conn()
    for k in ("alpha", "beta", "gamma"):
        c.call("VADD", k, "VALUES", 2, 1, 1, "x")
    assert c.call("DBSIZE") == 3
    assert c.call("KEYS", "*a") == [b"alpha", b"beta", b"gamma"]
    assert c.call("KEYS", "b*") == [b"beta"]
    assert c.call("KEYS", "?amm[a-z]") == [b"gamma"]
    assert c.call("SCAN", 0, "MATCH", "g*") == [b"0", [b"gamma"]]
    assert c.call("SCAN", 0, "TYPE", "string") == [b"0", []]
    assert c.call("EXISTS", "alpha", "beta", "nope") == 2
    assert c.call("DEL", "alpha", "nope") == 1
    assert c.call("EXISTS", "alpha") == 0
    assert c.call("SAVE") == "OK"
    assert c.call("BGSAVE") == "Background saving started"
    time.sleep(0.5)
    assert c.call("LASTSAVE") > 0
    assert c.call("TQ.CREATE", "l2set", "DIM", 4, "METRIC", "l2", "BITS", 3, "REFINE", "fp16") == "OK"
    assert c.call("TQ.CREATE", "l2set", "DIM", 4) == "BUSYKEY Target key name already exists."
    assert c.call("TQ.CREATE", "bad", "DIM", 1).startswith("ERR invalid TQ.CREATE option 'DIM'")
    assert c.call("TQ.CREATE", "bad", "METRIC", "l2") == "ERR TQ.CREATE needs DIM"
    c.call("VADD", "l2set", "VALUES", 4, 0, 0, 0, 0, "origin")
    c.call("VADD", "l2set", "VALUES", 4, 3, 4, 0, 0, "far")
    r = c.call("VSIM", "l2set", "VALUES", 4, 0, 0, 0, 0, "WITHSCORES")
    assert r[0] == b"origin" and abs(float(r[3]) - 25.0) < 0.5, r  # l2 sets report squared distances
    assert c.call("VSIM", "l2set", "VALUES", 4, 0, 0, 0, 0, "EPSILON", 0.1).startswith("ERR EPSILON needs")
    info = c.call("VINFO", "l2set")
    info = dict(zip(info[0::2], info[1::2]))
    assert info["metric"] == "l2" and info["bits"] == 3 and info["refine"] == "fp16"
    # Centering (auto by default) is decided by the first add: two vectors
    # are too few to take a mean from.
    assert info["centering"] == "none", info
    assert info["codebook"] == "scalar", info  # 3 bits: the vector codebook is for 1 and 2
    assert c.call("TQ.CREATE", "centered", "DIM", 4, "CENTER", "first-batch") == "OK"
    assert dict(zip(*[iter(c.call("VINFO", "centered"))] * 2))["centering"] == "first-batch"
    # The codebook: vector by default at 1 and 2 bits (asked for here at 1), refused at 4.
    assert c.call("TQ.CREATE", "vq2", "DIM", 8, "METRIC", "l2", "BITS", 2) == "OK"
    assert c.call("TQ.CREATE", "vq1", "DIM", 8, "METRIC", "l2", "BITS", 1, "CODEBOOK", "vector") == "OK"
    assert "vector codebook" in c.call("TQ.CREATE", "vq4", "DIM", 8, "BITS", 4, "CODEBOOK", "vector"), "4 bits"
    assert c.call("TQ.CREATE", "bad", "DIM", 8, "CODEBOOK", "pq").startswith("ERR invalid TQ.CREATE option 'CODEBOOK'")
    for key in ("vq2", "vq1"):
        assert dict(zip(*[iter(c.call("VINFO", key))] * 2))["codebook"] == "vector", key
        for i in range(8):
            c.call("VADD", key, "VALUES", 8, *[float(j == i) * (i + 1) for j in range(8)], "e%d" % i)
        # every element is its own nearest neighbour: the codes decode near it
        for i in range(8):
            q = [float(j == i) * (i + 1) for j in range(8)]
            assert c.call("VSIM", key, "VALUES", 8, *q, "COUNT", 1) == [b"e%d" % i], (key, i)
    assert c.call("TQ.COMPACT", "l2set") == "OK"
    assert c.call("FLUSHALL") == "OK" and c.call("DBSIZE") == 0
    assert [n for n in os.listdir(d.data) if n not in ("tqvecd.lock", "tqvecd.txlog")] == []


def test_databases(d):
    """SELECT 0..15, each database its own keyspace (also on disk, across a
    restart); FLUSHDB empties one, MOVE carries a set between two, WATCH
    tells a key of one database from its namesake in another."""
    c = d.conn()
    assert c.call("SELECT", 9) == "OK"
    assert c.call("VADD", "k", "VALUES", 3, 1, 0, 0, "in9") == 1
    assert c.call("DBSIZE") == 1 and c.call("KEYS", "*") == [b"k"]
    assert b"db=9" in c.call("CLIENT", "INFO")
    zero = d.conn()
    assert zero.call("DBSIZE") == 0 and zero.call("EXISTS", "k") == 0
    assert zero.call("VADD", "k", "VALUES", 2, 1, 0, "in0") == 1  # same name, another set
    assert zero.call("VDIM", "k") == 2 and c.call("VDIM", "k") == 3
    assert c.call("SELECT", 16) == Err("ERR DB index is out of range")
    assert c.call("SELECT", -1) == Err("ERR DB index is out of range")
    info = c.call("INFO", "keyspace").decode()
    assert "db0:keys=1" in info and "db9:keys=1" in info, info
    # WATCH in db 9 is not broken by a write to db 0's "k"
    assert c.call("WATCH", "k") == "OK"
    assert zero.call("VADD", "k", "VALUES", 2, 0, 1, "more") == 1
    assert c.call("MULTI") == "OK" and c.call("VCARD", "k") == "QUEUED" and c.call("EXEC") == [1]
    # MOVE: to a database where the name is free, not where it is taken
    assert c.call("VADD", "m", "VALUES", 3, 0, 1, 0, "x") == 1
    assert c.call("MOVE", "m", 0) == 1 and c.call("EXISTS", "m") == 0 and zero.call("VCARD", "m") == 1
    assert c.call("MOVE", "k", 0) == 0 and c.call("VDIM", "k") == 3  # db 0 has a "k"
    assert c.call("MOVE", "k", 9) == Err("ERR source and destination objects are the same")
    assert c.call("MOVE", "nokey", 0) == 0
    # FLUSHDB empties the selected database only
    assert c.call("VADD", "gone", "VALUES", 3, 1, 1, 0, "g") == 1
    assert c.call("SELECT", 3) == "OK" and c.call("VADD", "three", "VALUES", 2, 1, 1, "t") == 1
    assert c.call("FLUSHDB") == "OK" and c.call("DBSIZE") == 0
    assert c.call("SELECT", 9) == "OK" and c.call("DBSIZE") == 2
    # a restart finds every database again
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    c = d.conn()
    assert c.call("DBSIZE") == 2 and c.call("VDIM", "k") == 2 and c.call("VCARD", "m") == 1
    assert c.call("SELECT", 9) == "OK" and sorted(c.call("KEYS", "*")) == [b"gone", b"k"]
    assert c.call("VSIM", "k", "VALUES", 3, 1, 0, 0, "COUNT", 1) == [b"in9"]
    # fewer databases than the data directory holds: refused, nothing lost
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    p = subprocess.run(PREFIX + [TQVECD, "--dir", d.data, "--port", str(free_port()), "--databases", "4"],
                       capture_output=True, timeout=30)
    assert p.returncode != 0 and b"database 9, but databases is 4" in p.stderr, p.stderr
    d.start()
    try:
        import redis
    except ImportError:
        assert not os.environ.get("CI"), "redis-py (python3-redis) is missing"
        return
    r = redis.Redis(port=d.port, db=9)  # a client configured with db=9 selects at connect
    assert sorted(r.keys()) == [b"gone", b"k"]
    assert r.execute_command("VCARD", "gone") == 1


def test_rename_and_copy(d):
    """RENAME moves the open set (searches and writes go on, a restart
    finds it), RENAMENX refuses a taken name, COPY makes an independent set
    (REPLACE, DB); the errors are Redis's."""
    vs = vectors(200, 16, seed=3)
    c = d.conn()
    for i, v in enumerate(vs):
        c.send("VADD", "src", "FP32", fp32(v), "e%d" % i, "SETATTR", '{"i":%d}' % i)
    assert all(c.reply() == 1 for _ in vs)
    c.call("TQ.COMPACT", "src")  # a sealed segment as well as the log
    c.call("VADD", "src", "FP32", fp32(vs[0]), "late")
    before = c.call("VSIM", "src", "FP32", fp32(vs[7]), "WITHSCORES", "COUNT", 10)
    assert c.call("RENAME", "src", "dst") == "OK"
    assert c.call("EXISTS", "src") == 0 and c.call("VCARD", "dst") == 201
    assert c.call("VSIM", "dst", "FP32", fp32(vs[7]), "WITHSCORES", "COUNT", 10) == before
    assert c.call("VADD", "dst", "VALUES", 16, *([1] * 16), "after") == 1
    assert c.call("TQ.COMPACT", "dst") == "OK"  # new files land in the new place
    assert c.call("RENAME", "nokey", "x") == Err("ERR no such key")
    assert c.call("RENAME", "dst", "dst") == "OK"
    c.call("VADD", "other", "VALUES", 2, 1, 0, "o")
    assert c.call("RENAMENX", "dst", "other") == 0 and c.call("VDIM", "other") == 2
    assert c.call("RENAMENX", "dst", "dst") == 0
    # COPY: independent of its source afterwards
    assert c.call("COPY", "dst", "cp") == 1
    assert c.call("COPY", "dst", "other") == 0
    assert c.call("COPY", "dst", "dst") == Err("ERR source and destination objects are the same")
    assert c.call("COPY", "nokey", "x") == 0
    assert c.call("VREM", "dst", "e3") == 1
    assert c.call("VCARD", "cp") == 202 and c.call("VISMEMBER", "cp", "e3") == 1
    assert c.call("VGETATTR", "cp", "e9") == b'{"i":9}'
    assert c.call("VSIM", "cp", "FP32", fp32(vs[7]), "WITHSCORES", "COUNT", 10) == before
    assert c.call("COPY", "dst", "other", "REPLACE") == 1 and c.call("VCARD", "other") == 201
    assert c.call("COPY", "dst", "cp9", "DB", 9) == 1 and c.call("EXISTS", "cp9") == 0
    assert c.call("COPY", "dst", "x", "DB", 99) == Err("ERR DB index is out of range")
    # RENAME over an existing key replaces it
    assert c.call("RENAME", "cp", "other") == "OK" and c.call("VCARD", "other") == 202
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    c = d.conn()
    assert sorted(c.call("KEYS", "*")) == [b"dst", b"other"]
    assert c.call("VCARD", "dst") == 201 and c.call("VISMEMBER", "dst", "after") == 1
    assert c.call("SELECT", 9) == "OK" and c.call("VCARD", "cp9") == 201


def test_rename_under_load(d):
    """RENAME and COPY ... REPLACE back and forth while other clients
    search, add to and ask INFO about the set (run under ThreadSanitizer by tools/test): every
    reply is well formed, every element found was acknowledged (a RENAME
    drops its target, as in Redis, so acknowledged adds to the target may
    go), and a restart finds exactly what the daemon held."""
    c = d.conn()
    vs = vectors(64, 8, seed=31)
    assert c.call("VADD", "ping", "FP32", fp32(vs[0]), "seed") == 1
    stop = threading.Event()
    added, errors = set(), []

    def searcher():
        s = Conn(d.port)
        while not stop.is_set():
            for k in ("ping", "pong"):
                r = s.call("VSIM", k, "FP32", fp32(vs[1]), "COUNT", 3)
                if not (isinstance(r, list) or isinstance(r, Err)):
                    errors.append(r)
            if not isinstance(s.call("INFO", "vectorsets"), bytes):
                errors.append("INFO")

    def adder():
        s = Conn(d.port)
        i = 0
        while not stop.is_set():
            for k in ("ping", "pong"):
                r = s.call("VADD", k, "FP32", fp32(vs[i % 64]), "e%d" % i)
                if r == 1:
                    added.add(b"e%d" % i)
                elif r != 0:
                    errors.append(r)
                i += 1

    threads = [threading.Thread(target=searcher), threading.Thread(target=adder)]
    for t in threads:
        t.start()
    renamed = copied = 0
    for n in range(60):
        src, dst = ("ping", "pong") if n % 2 == 0 else ("pong", "ping")
        if n % 3 == 2:  # COPY ... REPLACE drops its target the same way
            r = c.call("COPY", src, dst, "REPLACE")
            assert r in (0, 1), r
            copied += r
            continue
        r = c.call("RENAME", src, dst)
        assert r == "OK" or r == Err("ERR no such key"), r
        renamed += r == "OK"
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert renamed > 0 and copied > 0
    held = {k: set(c.call("VRANGE", k, "-", "+")) for k in sorted(c.call("KEYS", "*"))}
    assert set(held) <= {b"ping", b"pong"}
    for k, elems in held.items():
        assert elems - {b"seed"} <= added, "%s holds elements never acknowledged" % k
        assert c.call("VCARD", k) == len(elems)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    c = d.conn()
    assert {k: set(c.call("VRANGE", k, "-", "+")) for k in sorted(c.call("KEYS", "*"))} == held


def test_expire(d):
    """EXPIRE and its relatives, TTL, PERSIST; an expired set is gone at once
    for every command, its files soon after, and the expiry outlives a
    restart; an expiry breaks a WATCH like a write."""
    c = d.conn()
    for k in ("a", "b", "c"):
        c.call("VADD", k, "VALUES", 2, 1, 0, "x")
    assert c.call("TTL", "a") == -1 and c.call("TTL", "nokey") == -2 and c.call("PTTL", "nokey") == -2
    assert c.call("EXPIRE", "a", 100) == 1 and 99 <= c.call("TTL", "a") <= 100
    assert 99000 < c.call("PTTL", "a") <= 100000
    assert c.call("EXPIRE", "a", 50, "GT") == 0 and c.call("EXPIRE", "a", 50, "LT") == 1
    assert c.call("EXPIRE", "a", 10, "NX") == 0 and c.call("EXPIRE", "b", 10, "XX") == 0
    assert c.call("EXPIRE", "a", 10, "NX", "XX") == Err(
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert c.call("EXPIRE", "nokey", 10) == 0
    assert c.call("EXPIRE", "a", "x") == Err("ERR value is not an integer or out of range")
    at = int(time.time()) + 1000
    assert c.call("EXPIREAT", "b", at) == 1 and c.call("EXPIRETIME", "b") == at
    assert c.call("PEXPIRETIME", "b") == at * 1000 and c.call("EXPIRETIME", "c") == -1
    assert c.call("PERSIST", "b") == 1 and c.call("TTL", "b") == -1 and c.call("PERSIST", "b") == 0
    assert c.call("EXPIRE", "c", -1) == 1 and c.call("EXISTS", "c") == 0  # a past time deletes
    assert "expires=1" in c.call("INFO", "keyspace").decode()
    # an expiry survives a restart
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    c = d.conn()
    assert 40 <= c.call("TTL", "a") <= 50 and c.call("TTL", "b") == -1
    # expiry in action: gone for commands at once, files removed by the sweeper
    assert c.call("PEXPIRE", "a", 300) == 1
    assert c.call("WATCH", "a") == "OK"
    deadline = time.time() + 10
    while c.call("EXISTS", "a") and time.time() < deadline:
        time.sleep(0.05)
    assert c.call("EXISTS", "a") == 0 and c.call("VCARD", "a") == 0 and c.call("KEYS", "*") == [b"b"]
    assert c.call("MULTI") == "OK" and c.call("VCARD", "b") == "QUEUED"
    assert c.call("EXEC") is None  # the watched key expired
    while len([n for n in os.listdir(d.data) if n.startswith("v")]) > 1 and time.time() < deadline:
        time.sleep(0.05)
    assert len([n for n in os.listdir(d.data) if n.startswith("v")]) == 1
    # a key that expired while the daemon was down is gone after start
    assert c.call("PEXPIRE", "b", 200) == 1
    d.kill()
    time.sleep(0.3)
    d.start()
    assert d.conn().call("EXISTS", "b") == 0
    # VADD on an expired name makes a new set
    c = d.conn()
    assert c.call("VADD", "b", "VALUES", 3, 1, 0, 0, "new") == 1 and c.call("VDIM", "b") == 3


def test_dump_and_restore(d):
    """DUMP on one daemon, RESTORE on another: the same set (answers,
    attributes, settings); a damaged or foreign payload is refused and
    leaves nothing; BUSYKEY, REPLACE and a TTL as Redis."""
    vs = vectors(120, 12, seed=4)
    c = d.conn()
    assert c.call("TQ.CREATE", "s", "DIM", 12, "METRIC", "l2", "BITS", 3, "REFINE", "fp16") == "OK"
    for i, v in enumerate(vs):
        c.send("VADD", "s", "FP32", fp32(v), "e%d" % i, "SETATTR", '{"i":%d}' % i)
    assert all(c.reply() == 1 for _ in vs)
    c.call("TQ.COMPACT", "s")
    c.call("VREM", "s", "e5")
    c.call("VADD", "s", "FP32", fp32(vs[1]), "late")
    want = c.call("VSIM", "s", "FP32", fp32(vs[9]), "WITHSCORES", "WITHATTRIBS", "COUNT", 15)
    payload = c.call("DUMP", "s")
    assert isinstance(payload, bytes) and c.call("DUMP", "nokey") is None
    other = Daemon()
    try:
        o = other.conn()
        assert o.call("RESTORE", "t", 0, payload) == "OK"
        assert o.call("VSIM", "t", "FP32", fp32(vs[9]), "WITHSCORES", "WITHATTRIBS", "COUNT", 15) == want
        assert o.call("VCARD", "t") == 120 and o.call("VISMEMBER", "t", "e5") == 0
        info = o.call("VINFO", "t")
        info = dict(zip(info[0::2], info[1::2]))
        assert info["metric"] == "l2" and info["bits"] == 3 and info["refine"] == "fp16"
        assert o.call("RESTORE", "t", 0, payload) == Err("BUSYKEY Target key name already exists.")
        assert o.call("VADD", "t", "FP32", fp32(vs[5]), "e5") == 1  # a restored set takes writes
        assert o.call("RESTORE", "t", 0, payload, "REPLACE") == "OK" and o.call("VCARD", "t") == 120
        assert o.call("RESTORE", "ttl", 5000, payload) == "OK" and 4000 < o.call("PTTL", "ttl") <= 5000
        abs_ms = int(time.time() * 1000) + 60000
        assert o.call("RESTORE", "abs", abs_ms, payload, "ABSTTL") == "OK"
        assert o.call("PEXPIRETIME", "abs") == abs_ms
        assert o.call("RESTORE", "neg", -1, payload) == Err("ERR Invalid TTL value, must be >= 0")
        # every damaged byte is refused, and leaves no key and no files
        rng = random.Random(5)
        for at in [0, 9, 17, len(payload) // 2, len(payload) - 1] + [rng.randrange(len(payload)) for _ in range(5)]:
            bad = bytearray(payload)
            bad[at] ^= 0x10
            assert o.call("RESTORE", "bad", 0, bytes(bad)) == Err("ERR DUMP payload version or checksum are wrong")
        assert o.call("RESTORE", "bad", 0, payload[:-9]) == Err("ERR DUMP payload version or checksum are wrong")
        assert o.call("RESTORE", "bad", 0, b"not a payload") == Err("ERR DUMP payload version or checksum are wrong")
        assert o.call("EXISTS", "bad") == 0
        assert not [n for n in os.listdir(other.data) if n.startswith(".stage")]
    finally:
        other.stop()


def test_vrange_vlinks_config_object(d):
    """VRANGE pages through names in byte order; VLINKS answers the nearest
    neighbours as level 0; CONFIG GET/SET, OBJECT, MEMORY USAGE; EF above
    Redis's limit refused."""
    c = d.conn()
    names = ["n%03d" % i for i in range(100)] + ["a", "b", "zz"]
    vs = vectors(len(names), 6, seed=8)
    for name, v in zip(names, vs):
        c.send("VADD", "r", "FP32", fp32(v), name)
    assert all(c.reply() == 1 for _ in names)
    got, start = [], "-"
    while True:
        page = c.call("VRANGE", "r", start, "+", 7)
        got += page
        if len(page) < 7:
            break
        start = "(" + page[-1].decode()
    assert got == sorted(n.encode() for n in names)
    assert c.call("VRANGE", "r", "[n010", "(n013") == [b"n010", b"n011", b"n012"]
    assert c.call("VRANGE", "r", "(n098", "+", -1) == [b"n099", b"zz"]
    assert c.call("VRANGE", "r", "-", "[b") == [b"a", b"b"]
    assert c.call("VRANGE", "r", "-", "+", 0) == []
    assert c.call("VRANGE", "nokey", "-", "+") == []
    assert c.call("VRANGE", "r", "n010", "+") == Err("ERR min or max not valid string range item")
    links = c.call("VLINKS", "r", "n042")
    assert len(links) == 1 and len(links[0]) == 16 and b"n042" not in links[0]
    near = c.call("VSIM", "r", "ELE", "n042", "COUNT", 17)
    assert set(links[0]) == set(near) - {b"n042"}
    scored = c.call("VLINKS", "r", "n042", "WITHSCORES")[0]
    assert scored[0::2] == links[0] and all(0 <= float(x) <= 1 for x in scored[1::2])
    assert c.call("VLINKS", "r", "nothere") is None and c.call("VLINKS", "nokey", "x") is None
    assert c.call("VSIM", "r", "ELE", "n001", "EF", 1000001) == Err("ERR invalid EF")
    conf = c.call("CONFIG", "GET", "*")
    conf = dict(zip(conf[0::2], conf[1::2]))
    for name in (b"port", b"dir", b"databases", b"maxclients", b"loglevel", b"segment-rows", b"appendfsync"):
        assert name in conf, name
    assert conf[b"databases"] == b"16" and conf[b"port"] == str(d.port).encode()
    assert c.call("CONFIG", "SET", "loglevel", "verbose", "maxclients", 50) == "OK"
    assert c.call("CONFIG", "GET", "loglevel", "maxclients") == [b"maxclients", b"50", b"loglevel", b"verbose"]
    assert c.call("CONFIG", "SET", "maxclients", 0).startswith("ERR CONFIG SET failed (possibly related to "
                                                                "argument 'maxclients')")
    assert c.call("CONFIG", "SET", "port", 1).startswith("ERR CONFIG SET failed (possibly related to argument "
                                                          "'port') - tqvecd reads it at start only")
    assert c.call("CONFIG", "SET", "nosuch", 1) == Err(
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
    assert c.call("CONFIG", "SET", "loglevel", "loud", "maxclients", 9).startswith("ERR CONFIG SET failed")
    assert c.call("CONFIG", "GET", "maxclients") == [b"maxclients", b"50"]  # nothing of a refused SET applies
    assert c.call("OBJECT", "ENCODING", "r") == b"tq4+code8" and c.call("OBJECT", "ENCODING", "nokey") is None
    assert c.call("OBJECT", "REFCOUNT", "r") == 1
    assert c.call("MEMORY", "USAGE", "r") > 103 * 6 and c.call("MEMORY", "USAGE", "nokey") is None
    assert c.call("TOUCH", "r", "nokey") == 1 and c.call("RANDOMKEY") == b"r"
    assert c.call("SELECT", 5) == "OK" and c.call("RANDOMKEY") is None


def test_reduce_and_one_dimension(d):
    """VADD ... REDUCE: the set keeps the projection's seed, VSIM takes
    full-size vectors, recall against the unreduced set stays high; the
    shape survives a restart, COPY and DUMP/RESTORE. One-dimensional sets
    work as Redis's (padded inside)."""
    # embeddings-like data: 64 coordinates driven by 8 latent ones, plus noise
    rng = random.Random(11)
    mix = [[rng.gauss(0, 1) for _ in range(8)] for _ in range(64)]
    latent = vectors(400, 8, seed=12)
    vs = [[sum(m * z for m, z in zip(row, lat)) + rng.gauss(0, 0.1) for row in mix] for lat in latent]
    c = d.conn()
    for i, v in enumerate(vs):
        c.send("VADD", "red", "REDUCE", 32, "FP32", fp32(v), "e%d" % i)
        c.send("VADD", "full", "FP32", fp32(v), "e%d" % i)
    assert all(c.reply() == 1 for _ in range(2 * len(vs)))
    assert c.call("VDIM", "red") == 32 and c.call("VDIM", "full") == 64
    info = c.call("VINFO", "red")
    info = dict(zip(info[0::2], info[1::2]))
    assert info["vector-dim"] == 32 and info["projection-input-dim"] == 64
    assert len(c.call("VEMB", "red", "e1")) == 32
    assert c.call("VADD", "red", "FP32", fp32(vs[0][:32]), "short") == Err(
        "ERR Vector dimension mismatch - got 32 but set has 64")
    assert c.call("VADD", "red", "REDUCE", 16, "FP32", fp32(vs[0]), "x").startswith("ERR REDUCE 16 does not match")
    assert c.call("VADD", "full", "REDUCE", 32, "FP32", fp32(vs[0]), "x").startswith("ERR REDUCE 32 does not match")
    assert c.call("VADD", "bad", "REDUCE", 64, "FP32", fp32(vs[0]), "x").startswith("ERR REDUCE dimension 64 must")
    assert c.call("VADD", "red", "REDUCE", 32, "FP32", fp32(vs[1]), "e1") == 0  # REDUCE repeated: fine
    # recall@10 of the reduced set against exact cosine neighbours
    hits = {"red": 0, "full": 0}
    for qi in range(20):
        q = vs[qi * 7]
        exact = {b"e%d" % i for i in sorted(range(len(vs)), key=lambda i: -cosine(q, vs[i]))[:10]}
        for k in hits:
            hits[k] += len(exact & set(c.call("VSIM", k, "FP32", fp32(q), "COUNT", 10)))
    assert hits["red"] >= 0.6 * hits["full"], "recall@10 reduced %d/200, unreduced %d/200" % (
        hits["red"], hits["full"])
    before = c.call("VSIM", "red", "FP32", fp32(vs[3]), "WITHSCORES", "COUNT", 10)
    assert c.call("COPY", "red", "red2") == 1
    payload = c.call("DUMP", "red")
    assert c.call("RESTORE", "red3", 0, payload) == "OK"
    # one dimension
    assert c.call("VADD", "one", "VALUES", 1, 2.5, "pos") == 1
    assert c.call("VADD", "one", "VALUES", 1, -1, "neg") == 1
    emb = [float(x) for x in c.call("VEMB", "one", "pos")]
    assert c.call("VDIM", "one") == 1 and len(emb) == 1 and abs(emb[0] - 2.5) < 0.05, emb
    got = c.call("VSIM", "one", "VALUES", 1, 3, "WITHSCORES")
    assert got[0::2] == [b"pos", b"neg"] and float(got[1]) > 0.99 and float(got[3]) < 0.01, got
    assert c.call("VADD", "one", "VALUES", 2, 1, 0, "x") == Err("ERR Vector dimension mismatch - got 2 but set has 1")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    c = d.conn()
    for k in ("red", "red2", "red3"):
        assert c.call("VSIM", k, "FP32", fp32(vs[3]), "WITHSCORES", "COUNT", 10) == before, k
        assert c.call("VDIM", k) == 32
    assert c.call("VADD", "red3", "FP32", fp32(vs[5]), "again") == 1
    assert c.call("VSIM", "one", "VALUES", 1, -2, "COUNT", 1) == [b"neg"] and c.call("VDIM", "one") == 1


def test_inputs_redis_accepts():
    """What Redis takes and tqvecd once refused: attributes over 1 MiB (the
    default request limit, 64 MiB, lets them through), COUNT beyond 100,000,
    VRANDMEMBER beyond the set's size, dimensions up to 65,536."""
    d = Daemon()
    try:
        c = d.conn()
        big = '{"text":"%s"}' % ("x" * (2 << 20))
        assert c.call("VADD", "s", "VALUES", 2, 1, 0, "a", "SETATTR", big) == 1
        assert c.call("VGETATTR", "s", "a") == big.encode()
        assert c.call("VSIM", "s", "VALUES", 2, 1, 0, "FILTER", '.text != ""') == [b"a"]
        assert c.call("VADD", "s", "VALUES", 2, 0, 1, "b") == 1
        assert c.call("VSIM", "s", "VALUES", 2, 1, 0, "COUNT", 200000) == [b"a", b"b"]
        assert sorted(c.call("VRANDMEMBER", "s", 50)) == [b"a", b"b"]
        # dimensions 1 to 65,536, as Redis
        wide = [math.sin(i * 0.01) for i in range(65536)]
        assert c.call("VADD", "wide", "FP32", fp32(wide), "w") == 1
        assert c.call("VDIM", "wide") == 65536
        assert c.call("VSIM", "wide", "FP32", fp32(wide), "COUNT", 1) == [b"w"]
        assert c.call("VADD", "wider", "FP32", fp32(wide + [1.0]), "w") == Err(
            "ERR vector dimension 65537 is above the limit 65536")
    finally:
        d.stop()


def test_restart_keeps_everything(d):
    vs = vectors(300, 24, seed=9)
    c = d.conn()
    for i, v in enumerate(vs):
        c.send("VADD", "p", "FP32", fp32(v), "e%d" % i, "SETATTR", '{"i":%d}' % i)
    for i in range(300):
        assert c.reply() == 1
    c.call("TQ.CREATE", "q", "DIM", 24, "METRIC", "ip")
    c.call("VADD", "q", "FP32", fp32(vs[0]), "only")
    c.call("VREM", "p", "e5")
    before = c.call("VSIM", "p", "FP32", fp32(vs[10]), "WITHSCORES", "WITHATTRIBS", "COUNT", 20)
    c.close()
    d.restart()
    c = d.conn()
    assert c.call("VCARD", "p") == 299 and c.call("VISMEMBER", "p", "e5") == 0
    assert c.call("VSIM", "p", "FP32", fp32(vs[10]), "WITHSCORES", "WITHATTRIBS", "COUNT", 20) == before
    info = c.call("VINFO", "q")
    assert dict(zip(info[0::2], info[1::2]))["metric"] == "ip"


def add_and_save(c, key, vs):
    """VADD every vector as e<i> (pipelined), then SAVE: the log sealed and
    the background partitioning and merging done when it returns."""
    for i, v in enumerate(vs):
        c.send("VADD", key, "FP32", fp32(v), "e%d" % i, "NOQUANT")
    for _ in vs:
        assert c.reply() == 1
    assert c.call("SAVE") == "OK"


def test_partitioned_sets():
    """Sealed segments are partitioned in the background: VINFO counts the
    partitions, VSIM NPROBE covering them all answers as the full scan,
    RECALL and the default probe fewer and still answer COUNT elements,
    bad values are refused, and a restart keeps the partitions."""
    d = Daemon(args=["--segment-rows", "500", "--partition-rows", "200", "--merge-factor", "never"])
    try:
        vs = vectors(2400, 16, seed=21)
        c = d.conn()
        add_and_save(c, "big", vs)
        info = c.call("VINFO", "big")
        fields = dict(zip(info[0::2], info[1::2]))
        assert fields["partitions"] > 0 and fields["segments"] >= 4, fields
        assert c.call("CONFIG", "GET", "partition-rows") == [b"partition-rows", b"200"]
        assert c.call("CONFIG", "GET", "merge-factor") == [b"merge-factor", b"never"]
        for q in (vs[3], vs[1500], [0.5] * 16):
            full = c.call("VSIM", "big", "FP32", fp32(q), "COUNT", 10, "WITHSCORES", "NPROBE", 0)
            assert c.call("VSIM", "big", "FP32", fp32(q), "COUNT", 10, "WITHSCORES", "NPROBE", 100000) == full
            for extra in (["RECALL", 0.5], ["RECALL", 1], ["NPROBE", 1], []):
                got = c.call("VSIM", "big", "FP32", fp32(q), "COUNT", 10, *extra)
                assert len(got) == 10, (extra, got)
        # the default finds a row's own element first
        assert c.call("VSIM", "big", "ELE", "e42", "COUNT", 1) == [b"e42"]
        assert c.call("VSIM", "big", "ELE", "e1", "RECALL", 0).startswith("ERR invalid RECALL")
        assert c.call("VSIM", "big", "ELE", "e1", "RECALL", 1.5).startswith("ERR invalid RECALL")
        assert c.call("VSIM", "big", "ELE", "e1", "NPROBE", -1).startswith("ERR invalid NPROBE")
        before = c.call("VSIM", "big", "FP32", fp32(vs[7]), "COUNT", 10, "RECALL", 0.9)
        c.close()
        d.restart()
        c = d.conn()
        info = c.call("VINFO", "big")
        assert dict(zip(info[0::2], info[1::2]))["partitions"] == fields["partitions"]
        assert c.call("VSIM", "big", "FP32", fp32(vs[7]), "COUNT", 10, "RECALL", 0.9) == before
    finally:
        d.stop()


def test_sealed_segments_are_merged():
    """With the default merge factor, segments sealed one after another are
    merged in the background: a set sealed ten times keeps fewer than four
    segments per size class, partitioned, and answers as the full scan."""
    d = Daemon(args=["--segment-rows", "100", "--partition-rows", "200"])
    try:
        vs = vectors(1000, 16, seed=5)
        c = d.conn()
        add_and_save(c, "m", vs)
        assert c.call("CONFIG", "GET", "merge-factor") == [b"merge-factor", b"4"]
        info = c.call("VINFO", "m")
        fields = dict(zip(info[0::2], info[1::2]))
        # ten segments of 100 sealed; fewer than four stay below 400 rows
        # (the originals), the rest are merges of 400 rows or more
        assert fields["segments"] <= 4 and fields["partitions"] > 0, fields
        assert c.call("VCARD", "m") == 1000
        for i in (0, 99, 100, 555, 999):
            assert c.call("VSIM", "m", "ELE", "e%d" % i, "COUNT", 1, "NPROBE", 0) == [b"e%d" % i]
        q = fp32([0.5] * 16)
        full = c.call("VSIM", "m", "FP32", q, "COUNT", 10, "WITHSCORES", "NPROBE", 0)
        assert c.call("VSIM", "m", "FP32", q, "COUNT", 10, "WITHSCORES", "NPROBE", 100000) == full
    finally:
        d.stop()


def test_auth():
    d = Daemon(args=["--requirepass", "s3cret"])
    try:
        assert d.cli("PING") == "NOAUTH Authentication required."
        assert d.cli("AUTH", "wrong") == "WRONGPASS invalid username-password pair or user is disabled."
        assert d.cli("AUTH", "other", "s3cret") == "WRONGPASS invalid username-password pair or user is disabled."
        assert d.cli("PING", password="s3cret") == "PONG"
        c = d.conn()
        assert c.call("HELLO", 3).startswith("NOAUTH HELLO must be called")
        assert c.call("HELLO", 3, "AUTH", "default", "s3cret")[b"proto"] == 3
        assert c.call("PING") == "PONG"
    finally:
        d.stop()
    d = Daemon()
    try:
        assert d.cli("AUTH", "x").startswith("ERR AUTH <password> called without any password configured")
    finally:
        d.stop()


def test_pipelining(d):
    c = d.conn()
    n = 2000
    vs = vectors(n, 8, seed=11)
    c.send_raw(b"".join(encode(("VADD", "pp", "FP32", fp32(v), "e%d" % i)) for i, v in enumerate(vs)))
    assert [c.reply() for _ in range(n)] == [1] * n
    batch = b"".join(encode(("ECHO", str(i))) + encode(("VSIM", "pp", "ELE", "e%d" % i, "COUNT", 1)) for i in range(500))
    c.send_raw(batch)
    for i in range(500):
        assert c.reply() == str(i).encode()
        assert c.reply() == [b"e%d" % i]
    # inline commands, as typed into telnet, with quoting
    c.send_raw(b'PING\r\nECHO "a\\x41 b"\r\nECHO \'it\'\'s\'\r\n')
    assert c.reply() == "PONG" and c.reply() == b"aA b"
    assert isinstance(c.reply(), Err)  # 'it''s' is not valid quoting
    assert c.closed()


def test_pipelined_vsims_answered_together(d):
    """Pipelined VSIMs on one set are answered by one search (vsim_run):
    every reply must equal the one the same request gets alone, in order,
    also where the run breaks (another set, other options, an error, a
    command in between) and with scores and attributes."""
    c = d.conn()
    n, dim = 3000, 24
    vs = vectors(n, dim, seed=21)
    c.send_raw(b"".join(encode(("VADD", "runs", "FP32", fp32(v), "e%d" % i, "SETATTR", '{"i":%d}' % i))
                        for i, v in enumerate(vs)))
    assert [c.reply() for _ in range(n)] == [1] * n
    assert c.call("VADD", "other", "VALUES", 3, 1, 0, 0, "x") == 1
    qs = vectors(40, dim, seed=22)
    reqs = []
    for i, q in enumerate(qs):
        reqs.append(("VSIM", "runs", "FP32", fp32(q), "COUNT", 7, "WITHSCORES"))
        if i == 9:
            reqs.append(("VSIM", "runs", "FP32", fp32(q), "COUNT", 3))            # other COUNT: a new run
        if i == 14:
            reqs.append(("VSIM", "runs", "VALUES", 2, 1, 0))                    # an error inside a run
        if i == 19:
            reqs.append(("VSIM", "other", "VALUES", 3, 1, 0, 0))                 # another set
        if i == 24:
            reqs.append(("PING",))                                              # another command
        if i == 29:
            reqs.append(("VSIM", "runs", "ELE", "e5", "COUNT", 7, "WITHSCORES"))  # ELE in a run
        if i == 34:
            reqs.append(("VSIM", "runs", "FP32", fp32(q), "COUNT", 7, "FILTER", ".i % 2 == 0", "WITHATTRIBS"))
    # one at a time: the reference
    alone = [c.call(*r) for r in reqs]
    def batched():
        info = c.call("INFO", "stats").decode()
        return [int(line.split(":")[1]) for line in info.split("\r\n") if line.startswith("vsim_batched_")]
    assert batched() == [0, 0]  # one at a time, nothing is shared
    # all pipelined in one write, twice (a run may start anywhere)
    for _ in range(2):
        c.send_raw(b"".join(encode(r) for r in reqs))
        together = [c.reply() for _ in reqs]
        assert together == alone
    searches, queries = batched()
    assert searches >= 2 and queries > 2 * searches  # runs were shared searches
    bad = alone[reqs.index(("VSIM", "runs", "VALUES", 2, 1, 0))]
    assert isinstance(bad, Err) and "dimension mismatch" in bad
    assert alone[0] != alone[1] and len(alone[0]) == 14  # 7 keys with scores, query by query
    evens = alone[reqs.index(next(r for r in reqs if "FILTER" in r))]
    assert len(evens) == 14 and all(int(evens[j][1:].decode()) % 2 == 0 for j in range(0, 14, 2))


def test_transactions(d):
    """MULTI queues, EXEC runs the queue as one reply array, DISCARD drops
    it, a command refused while queueing aborts the whole transaction
    (EXECABORT, nothing applied), and redis-py's default (transactional)
    pipeline works."""
    c = d.conn()
    assert c.call("MULTI") == "OK"
    assert c.call("VADD", "tx", "VALUES", 3, 1, 0, 0, "a") == "QUEUED"
    assert c.call("VADD", "tx", "VALUES", 3, 0, 1, 0, "b") == "QUEUED"
    assert c.call("VCARD", "tx") == "QUEUED"
    assert c.call("MULTI") == Err("ERR MULTI calls can not be nested")
    assert c.call("EXEC") == [1, 1, 2]
    assert c.call("EXEC") == Err("ERR EXEC without MULTI")
    assert c.call("DISCARD") == Err("ERR DISCARD without MULTI")
    # a refused command: nothing of the transaction is applied
    assert c.call("MULTI") == "OK"
    assert c.call("VADD", "tx", "VALUES", 3, 0, 0, 1, "c") == "QUEUED"
    assert isinstance(c.call("NOSUCHCOMMAND", "x"), Err)
    assert isinstance(c.call("VCARD"), Err)  # wrong number of arguments
    reply = c.call("EXEC")
    assert isinstance(reply, Err) and reply.startswith("EXECABORT"), reply
    assert c.call("VCARD", "tx") == 2 and c.call("VISMEMBER", "tx", "c") == 0
    # DISCARD drops the queue
    assert c.call("MULTI") == "OK"
    assert c.call("VREM", "tx", "a") == "QUEUED"
    assert c.call("DISCARD") == "OK"
    assert c.call("VCARD", "tx") == 2
    # errors at run time stay inside the reply array, the rest is applied
    assert c.call("MULTI") == "OK"
    assert c.call("VADD", "tx", "VALUES", 2, 1, 0, "d") == "QUEUED"  # wrong dimension: refused when run
    assert c.call("VADD", "tx", "VALUES", 3, 0, 0, 1, "e") == "QUEUED"
    out = c.call("EXEC")
    assert isinstance(out[0], Err) and out[1] == 1, out
    assert c.call("VCARD", "tx") == 3
    # WATCH: a change to a watched key by anyone makes EXEC run nothing
    other = d.conn()
    assert c.call("WATCH", "tx", "elsewhere") == "OK"
    assert other.call("VADD", "tx", "VALUES", 3, 1, 1, 0, "f") == 1
    assert c.call("MULTI") == "OK"
    assert c.call("VADD", "tx", "VALUES", 3, 1, 1, 1, "g") == "QUEUED"
    assert c.call("EXEC") is None
    assert c.call("VISMEMBER", "tx", "g") == 0
    assert c.call("WATCH", "tx") == "OK"  # unchanged since: runs
    assert other.call("VCARD", "tx") == 4  # reads do not count
    assert c.call("MULTI") == "OK"
    assert c.call("WATCH", "tx") == Err("ERR WATCH inside MULTI is not allowed")
    assert c.call("VADD", "tx", "VALUES", 3, 1, 1, 1, "g") == "QUEUED"
    assert c.call("EXEC") == [1]
    assert c.call("WATCH", "tx") == "OK"
    assert other.call("DEL", "tx") == 1  # a deleted key counts as changed
    assert c.call("UNWATCH") == "OK"     # ... unless no longer watched
    assert c.call("MULTI") == "OK" and c.call("VADD", "tx", "VALUES", 3, 1, 0, 0, "a") == "QUEUED"
    assert c.call("EXEC") == [1]
    assert c.call("WATCH", "fl") == "OK"
    assert other.call("FLUSHALL") == "OK"  # breaks every watch
    assert c.call("MULTI") == "OK" and c.call("VCARD", "tx") == "QUEUED"
    assert c.call("EXEC") is None
    try:
        import redis
    except ImportError:
        # tools/setup installs it; under CI its absence is a failure
        assert not os.environ.get("CI"), "redis-py (python3-redis) is missing"
        print("redis-py not installed (Debian package python3-redis): its pipeline not checked")
        return
    r = redis.Redis(port=d.port)
    with r.pipeline() as p:  # transaction=True: MULTI ... EXEC
        p.execute_command("VADD", "txp", "VALUES", 3, 1, 0, 0, "x")
        p.execute_command("VADD", "txp", "VALUES", 3, 0, 1, 0, "y")
        p.execute_command("VCARD", "txp")
        assert p.execute() == [1, 1, 2]
    with r.pipeline() as p:
        p.execute_command("VADD", "txp", "VALUES", 3, 0, 0, 1, "z")
        p.execute_command("NOSUCHCOMMAND")
        try:
            p.execute()
            raise AssertionError("a transaction with an unknown command was executed")
        except redis.exceptions.ResponseError:
            pass
    assert r.execute_command("VCARD", "txp") == 2, "nothing of an aborted transaction is applied"
    # redis-py's optimistic locking: watch, read, change in a transaction
    with r.pipeline() as p:
        p.watch("txp")
        n = p.execute_command("VCARD", "txp")
        p.multi()
        p.execute_command("VADD", "txp", "VALUES", 3, 1, 1, n, "w%d" % n)
        assert p.execute() == [1]
    with r.pipeline() as p:
        p.watch("txp")
        r.execute_command("VREM", "txp", "x")  # another client's change
        p.multi()
        p.execute_command("VADD", "txp", "VALUES", 3, 1, 1, 1, "never")
        try:
            p.execute()
            raise AssertionError("EXEC ran although a watched key changed")
        except redis.exceptions.WatchError:
            pass
    assert r.execute_command("VISMEMBER", "txp", "never") == 0


def test_malformed_requests(d):
    cases = [
        (b"*2\r\n$4\r\nECHO\r\n$99999999999\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*99999999999\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*2\r\n$4\r\nECHO\r\n:12\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n$4\r\nPINGxx\r\n", "ERR Protocol error: bulk string not followed by CRLF"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b'ECHO "unclosed\r\n', "ERR Protocol error: unbalanced quotes in request"),
        (b"\x00\xff\xfe" * 30000, "ERR Protocol error: too big inline request"),
    ]
    for data, want in cases:
        c = d.conn()
        c.send_raw(data)
        got = c.reply()
        assert isinstance(got, Err) and got == want, (data[:30], got)
        assert c.closed()
    # a request larger than --max-request-bytes
    c = d.conn()
    c.send_raw(b"*2\r\n$4\r\nECHO\r\n$2000000\r\n" + b"x" * 2000000)
    assert c.reply().startswith("ERR Protocol error: invalid bulk length")
    # many small arguments adding up to more than --max-request-bytes
    c = d.conn()
    c.send_raw(encode(["ECHO"] + ["y" * 2048] * 600))
    assert c.reply().startswith("ERR Protocol error: request larger than max-request-bytes")
    assert c.closed()
    # half a request, then gone; and binary garbage
    for junk in (b"*3\r\n$4\r\nVADD\r\n$1\r\nk", os.urandom(5000)):
        c = d.conn()
        c.send_raw(junk)
        c.close()
    # the server is fine and lost nothing
    assert d.cli("PING") == "PONG"
    assert d.cli("VADD", "ok", "VALUES", 2, 1, 0, "a") == "1"
    assert d.cli("VCARD", "ok") == "1"


def local_address():
    """A non-loopback address of this machine, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
        addr = s.getsockname()[0]
        return None if addr.startswith("127.") else addr
    except OSError:
        return None
    finally:
        s.close()


def test_protected_mode():
    """Bound beyond loopback without a password, tqvecd refuses clients that
    are not on loopback (Redis's protected mode); a password lifts it."""
    addr = local_address()
    if not addr:
        print("  (no non-loopback address here: skipped)")
        return
    for args, password in ((["--bind", "0.0.0.0"], None), (["--bind", "0.0.0.0", "--requirepass", "pw"], "pw")):
        d = Daemon(args=args)
        try:
            c = socket.create_connection((addr, d.port), timeout=10)
            c.sendall(encode(("PING",)))
            reply = c.recv(4096)
            if password is None:
                assert reply.startswith(b"-DENIED tqvecd is running in protected mode"), reply
            else:
                assert reply == b"-NOAUTH Authentication required.\r\n", reply
            c.close()
            assert d.cli("PING", password=password) == "PONG"  # loopback is always served
        finally:
            d.stop()


def test_limits():
    d = Daemon(args=["--maxclients", "2", "--max-args", "64"])
    try:
        a, b = d.conn(), d.conn()
        assert a.call("PING") == "PONG" and b.call("PING") == "PONG"
        c = d.conn()
        assert c.reply() == "ERR max number of clients reached"
        a.close()
        time.sleep(0.2)
        c = d.conn()
        assert c.call("PING") == "PONG"
        c.send_raw(encode(["ECHO"] + ["x"] * 100))
        assert c.reply() == "ERR Protocol error: invalid multibulk length"
    finally:
        d.stop()


def xxh3(data):
    """XXH3-64, from the libxxhash every tqvec build links."""
    import ctypes
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))


def txlog_record(kind, tx, payload):
    head = struct.pack("<IHHQ", len(payload), kind, 0, tx) + payload
    return head + struct.pack("<Q", xxh3(head))


def txlog_begin(tx, db, commands):
    out = struct.pack("<II", db, len(commands))
    for cmd in commands:
        args = [a if isinstance(a, bytes) else str(a).encode() for a in cmd]
        out += struct.pack("<I", len(args)) + b"".join(struct.pack("<I", len(a)) + a for a in args)
    return txlog_record(1, tx, out)


def test_interrupted_transaction_is_finished_at_start(d):
    """A transaction log left by a crash (tqvecd.txlog): at start, the
    transaction that began and did not end runs on from its last DONE
    (including a SELECT among its commands), one that ended is left alone,
    a torn record is ignored; then the log is emptied."""
    c = d.conn()
    for k in ("a", "b"):
        assert c.call("VADD", k, "VALUES", 2, 1, 0, "e0") == 1
    assert c.call("VADD", "a", "VALUES", 2, 0, 1, "x") == 1  # the command the crash let run
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    interrupted = [("VADD", "a", "VALUES", 2, 0, 1, "x"), ("VADD", "b", "VALUES", 2, 1, 1, "y"),
                   ("VREM", "a", "e0"), ("SELECT", 4), ("VADD", "four", "VALUES", 2, 1, 0, "z"),
                   ("RENAME", "four", "renamed")]
    ended = [("VADD", "a", "VALUES", 2, 1, 1, "never")]
    log = (txlog_begin(7, 0, interrupted) + txlog_record(2, 7, struct.pack("<II", 1, 0)) +
           txlog_begin(8, 0, ended) + txlog_record(3, 8, b""))
    torn = txlog_begin(9, 0, [("VADD", "a", "VALUES", 2, 1, 1, "torn")])
    with open(os.path.join(d.data, "tqvecd.txlog"), "wb") as f:
        f.write(log + torn[:-5])
    d.start()
    c = d.conn()
    assert c.call("VISMEMBER", "a", "x") == 1 and c.call("VISMEMBER", "b", "y") == 1
    assert c.call("VISMEMBER", "a", "e0") == 0
    assert c.call("VISMEMBER", "a", "never") == 0 and c.call("VISMEMBER", "a", "torn") == 0
    assert c.call("SELECT", 4) == "OK" and c.call("KEYS", "*") == [b"renamed"]
    assert os.path.getsize(os.path.join(d.data, "tqvecd.txlog")) == 0
    # a transaction of several writes runs as before, and leaves the log ended
    assert c.call("MULTI") == "OK" and c.call("VADD", "renamed", "VALUES", 2, 0, 1, "w") == "QUEUED"
    assert c.call("DEL", "nothing") == "QUEUED" and c.call("EXEC") == [1, 0]
    d.kill()
    d.start()
    c = d.conn()
    assert c.call("SELECT", 4) == "OK" and c.call("VISMEMBER", "renamed", "w") == 1
    log_text = open(d.log.name, "rb").read().decode(errors="replace")
    assert log_text.count("finishing transaction") == 1, "only transaction 7 was left unfinished"


def kill_under_load(d, load, stop, seconds):
    """Run load(port) in a thread for `seconds`, SIGKILL the daemon under
    it, then stop and join the thread (its connection is gone)."""
    t = threading.Thread(target=load, args=(d.port,))
    t.start()
    time.sleep(seconds)
    d.kill(signal.SIGKILL)
    stop.set()
    t.join()


def test_sigkill_loses_no_acknowledged_write():
    """Pipelined VADD/VREM load, SIGKILL at random moments, restart: every
    acknowledged write is there, every acknowledged removal stays removed.
    Small segments, so that seals, background partitioning and merges
    (which run while the log is replayed and verified after each restart,
    and go on into the next load) are cut short too."""
    data = tempfile.mkdtemp(prefix="tqvecd-kill-")
    rng = random.Random(7)
    acked_add, acked_rem = set(), set()
    kills = 0
    try:
        d = Daemon(data=data, args=["--appendfsync", "no", "--segment-rows", "400", "--partition-rows", "300"])
        next_id = 0
        for round_ in range(6):
            stop = threading.Event()

            def load(port):
                nonlocal next_id
                try:
                    c = Conn(port)
                    while not stop.is_set():
                        batch, ids = [], []
                        for _ in range(50):
                            i = next_id
                            next_id += 1
                            ids.append(("add", i))
                            batch.append(encode(("VADD", "crash", "VALUES", 4, i % 7 + 1, i % 5, 1, i % 3, "e%d" % i)))
                            if i % 10 == 9:
                                ids.append(("rem", i - 5))
                                batch.append(encode(("VREM", "crash", "e%d" % (i - 5))))
                        c.send_raw(b"".join(batch))
                        for kind, i in ids:
                            r = c.reply()
                            if kind == "add" and r in (0, 1):
                                acked_add.add(i)
                                acked_rem.discard(i)
                            elif kind == "rem" and r == 1:
                                acked_rem.add(i)
                except (EOFError, OSError):
                    pass

            kill_under_load(d, load, stop, 0.2 + rng.random() * 0.6)
            kills += 1
            d.start()
            c = d.conn()
            ids = sorted(acked_add)
            for at in range(0, len(ids), 2000):
                chunk = ids[at:at + 2000]
                c.send_raw(b"".join(encode(("VISMEMBER", "crash", "e%d" % i)) for i in chunk))
                for i in chunk:
                    want = 0 if i in acked_rem else 1
                    got = c.reply()
                    assert got == want, "round %d: e%d is %d, acknowledged %s" % (
                        round_, i, got, "removed" if want == 0 else "added")
            c.close()
        c = d.conn()
        assert c.call("SAVE") == "OK"  # the background work done
        info = c.call("VINFO", "crash")
        fields = dict(zip(info[0::2], info[1::2]))
        sealed = next_id // 400
        assert fields["partitions"] > 0 and fields["segments"] < sealed // 4, (sealed, fields)
        c.close()
        d.stop()
        print("  %d kills, %d acknowledged adds and %d removals verified, %d segments from %d seals or more" % (
            kills, len(acked_add), len(acked_rem), fields["segments"], sealed))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_pipelined_vadds_answered_together(d):
    """Pipelined VADDs to one set are added by one call (one log append):
    the replies, the stored elements and their attributes are those of
    sending them one at a time, around a refused VADD, a repeated element,
    another set and another command in the middle."""
    vs = vectors(120, 8, seed=21)
    c = d.conn()
    for k in ("piped", "single"):
        assert c.call("VADD", k, "FP32", fp32(vs[0]), "e0", "SETATTR", '{"i":0}') == 1

    def requests(k):
        out = []
        for i, v in enumerate(vs):
            if i == 40:
                out.append(("VADD", k, "VALUES", 2, 1, 0, "bad"))  # wrong dimension
            if i == 60:
                out.append(("VADD", k, "FP32", fp32(vs[3]), "e3"))  # repeats e3: keeps its attributes
            if i == 80:
                out.append(("VCARD", k))
            if i == 90:
                out.append(("VADD", "elsewhere-" + k, "FP32", fp32(v), "x"))
            extra = ("SETATTR", '{"i":%d}' % i) if i % 3 else ()
            out.append(("VADD", k, "FP32", fp32(v), "e%d" % i) + extra)
        return out

    c.send_raw(b"".join(encode(rq) for rq in requests("piped")))
    piped = [c.reply() for _ in requests("piped")]
    single = [c.call(*rq) for rq in requests("single")]
    assert piped == single, [(i, a, b) for i, (a, b) in enumerate(zip(piped, single)) if a != b]
    assert sum(isinstance(x, Err) for x in piped) == 1
    assert c.call("VCARD", "piped") == c.call("VCARD", "single") == 120
    for i in range(120):
        assert c.call("VGETATTR", "piped", "e%d" % i) == c.call("VGETATTR", "single", "e%d" % i), i
    assert c.call("VSIM", "piped", "FP32", fp32(vs[5]), "WITHSCORES", "COUNT", 10) == \
        c.call("VSIM", "single", "FP32", fp32(vs[5]), "WITHSCORES", "COUNT", 10)


def test_sigkill_keeps_transactions_whole():
    """Transactions under SIGKILL, of VADDs to one set (one log append) and
    of VADDs to three sets (the transaction log, finished at start): an
    acknowledged EXEC is wholly there after restart, an unacknowledged one
    wholly or not at all."""
    data = tempfile.mkdtemp(prefix="tqvecd-killtx-")
    rng = random.Random(9)
    acked = set()
    sent = []
    try:
        d = Daemon(data=data, args=["--appendfsync", "no"])
        for round_ in range(5):
            stop = threading.Event()

            def load(port, round_=round_):
                try:
                    c = Conn(port)
                    t = 0
                    while not stop.is_set():
                        tx = (round_, t)
                        t += 1
                        sent.append(tx)
                        batch = [encode(("MULTI",))]
                        for j in range(12):
                            key = "tx" if tx[1] % 2 else "tx%d" % (j % 3)
                            batch.append(encode(("VADD", key, "VALUES", 4, j + 1, t % 7, round_, 1,
                                                 "r%d-t%d-%d" % (round_, tx[1], j))))
                        batch.append(encode(("EXEC",)))
                        c.send_raw(b"".join(batch))
                        replies = [c.reply() for _ in range(14)]
                        if isinstance(replies[-1], list) and len(replies[-1]) == 12:
                            acked.add(tx)
                except (EOFError, OSError):
                    pass

            kill_under_load(d, load, stop, 0.3 + rng.random() * 0.5)
            d.start()
            c = d.conn()
            for tx in sent:
                keys = ["tx" if tx[1] % 2 else "tx%d" % (j % 3) for j in range(12)]
                c.send_raw(b"".join(encode(("VISMEMBER", keys[j], "r%d-t%d-%d" % (tx[0], tx[1], j)))
                                    for j in range(12)))
                there = [c.reply() for _ in range(12)]
                assert sum(there) in (0, 12), "transaction %s is in part: %s" % (tx, there)
                assert tx not in acked or sum(there) == 12, "acknowledged transaction %s is missing" % (tx,)
            c.close()
        d.stop()
        print("  %d transactions sent, %d acknowledged, all whole after 5 kills" % (len(sent), len(acked)))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_shutdown_command_and_signal(d):
    c = d.conn()
    c.call("VADD", "s", "VALUES", 2, 1, 0, "a")
    c.send("SHUTDOWN")
    assert c.closed()
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    assert d.cli("VCARD", "s") == "1"
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=30) == 0
    d.log.close()
    d.start()
    assert d.cli("VCARD", "s") == "1"


def test_second_daemon_on_same_dir_is_refused(d):
    p = subprocess.run(PREFIX + [TQVECD, "--dir", d.data, "--port", str(free_port())], capture_output=True,
                       timeout=30)
    assert p.returncode != 0 and b"another tqvecd" in p.stderr, p.stderr


def test_tqvec_serve_and_load():
    if not TQVEC:
        return
    d = Daemon(exe=[TQVEC, "serve"])
    try:
        path = os.path.join(d.data, "..", os.path.basename(d.data) + ".fvecs")
        vs = vectors(500, 16, seed=13)
        with open(path, "wb") as f:
            for v in vs:
                f.write(struct.pack("<i", 16) + fp32(v))
        out = subprocess.run([TQVEC, "load", "--server", "127.0.0.1:%d" % d.port, "--key", "ld", "--base", path,
                              "--pipeline", "64"], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert d.cli("VCARD", "ld") == "500"
        assert d.cli("VSIM", "ld", "ELE", "123", "COUNT", 1) == "123"
        os.unlink(path)
    finally:
        d.stop()


def test_eval_against_the_daemon(d):
    """tqvec eval --server: creates and loads one set per configuration,
    measures end to end, reuses a loaded set; recall agrees with in-memory."""
    if not TQVEC:
        return
    base = d.data + "-base.fvecs"
    queries = d.data + "-query.fvecs"
    for path, n, seed in ((base, 1500, 21), (queries, 40, 22)):
        with open(path, "wb") as f:
            for v in vectors(n, 24, seed=seed):
                f.write(struct.pack("<i", 24) + fp32(v))
    try:
        where = "127.0.0.1:%d" % d.port
        common = ["eval", "--base", base, "--queries", queries, "--metric", "cosine", "-k", "10",
                  "--refine", "code8", "--rerank", "0,8", "--json", "-", "--name", "tiny"]
        out = subprocess.run([TQVEC] + common + ["--server", where, "--bits", "2,4", "--clients", "1,3"],
                             capture_output=True, timeout=300, text=True)
        assert out.returncode == 0, out.stderr
        recs = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(recs) == 2 * 2 * 2
        assert all(r["target"] == "server" and r["target_where"] == where for r in recs)
        keys = d.cli("KEYS", "tqeval:*").split("\n")
        assert len(keys) == 2 and all(d.cli("VCARD", k) == "1500" for k in keys), keys
        assert all(r["build_s"] > 0 and r["peak_rss_scope"] == "server" and r["peak_rss_bytes"] > 0 for r in recs)
        # The same points in memory, on disk and through the daemon in one run
        # (--targets): same seed, same codes, so the same answers.
        both = subprocess.run([TQVEC] + common + ["--targets", "memory,dir,server", "--server",
                                                  where, "--dir", d.data + "-coll", "--bits", "4"],
                              capture_output=True, timeout=300, text=True)
        assert both.returncode == 0, both.stderr
        rows = [json.loads(line) for line in both.stdout.splitlines()]
        assert [r["target"] for r in rows] == ["memory"] * 2 + ["dir"] * 2 + ["server"] * 2, rows
        local = {(r["bits"], r["rerank"]): r for r in rows if r["target"] == "memory"}
        for r in recs + rows:
            m = local.get((r["bits"], r["rerank"]))
            if not m:
                continue
            assert abs(r["recall_at_k"] - m["recall_at_k"]) < 0.03, (r, m)
            # VINFO's split: scanned codes as in memory, code8 refine data beside them
            assert r["bytes_per_vector"] == m["bytes_per_vector"], (r, m)
            assert r["rerank_bytes_per_vector"] == m["rerank_bytes_per_vector"], (r, m)
        shutil.rmtree(d.data + "-coll")
        # A second run reuses the loaded sets (build time 0).
        again = subprocess.run([TQVEC] + common + ["--server", where, "--bits", "4"], capture_output=True,
                               timeout=300, text=True)
        assert again.returncode == 0, again.stderr
        assert all(json.loads(line)["build_s"] == 0 for line in again.stdout.splitlines())
        # A set holding something else is refused, not mixed in.
        d.cli("VADD", "other", "VALUES", 2, 1, 0, "x")
        bad = subprocess.run([TQVEC] + common + ["--server", where, "--key", "other"], capture_output=True,
                             timeout=60, text=True)
        assert bad.returncode == 1 and "holds 1 elements" in bad.stderr, bad.stderr
    finally:
        os.unlink(base)
        os.unlink(queries)


def main():
    if not REDIS_CLI:
        print("redis-cli not found (Debian package redis-tools): skipping")
        return 77
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_")]
    only = os.environ.get("TQVECD_TEST")
    failed = ran = 0
    for name, fn in tests:
        if only and only not in name:
            continue
        ran += 1
        t0 = time.time()
        d = Daemon(args=["--max-request-bytes", "1048576"]) if fn.__code__.co_argcount == 1 else None
        try:
            fn(d) if d else fn()
            print("ok   %s (%.1f s)" % (name, time.time() - t0))
        except Exception as e:  # report every test, then fail
            failed += 1
            import traceback
            traceback.print_exc()
            print("FAIL %s: %r" % (name, e))
        finally:
            if d:
                d.stop()
    print("%d of %d daemon tests failed" % (failed, ran) if failed else "all %d daemon tests passed" % ran)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
