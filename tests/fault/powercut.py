#!/usr/bin/python3
"""Simulated power cuts at every sync boundary of a collection workload.

The workload (powercut work) runs once under the fault shim in recording
mode: every write, truncate, sync, rename, unlink and mkdir under its root
goes to a journal, with its acknowledgements in order. This driver replays
the journal into a model of what a disk holds:
  - a file's synced bytes are what its last fsync/fdatasync saw; writes and
    truncates after it are pending;
  - a create, rename, unlink or mkdir is durable once its directory is
    fsynced; before that it is pending.
It then "cuts power" after every record that is a sync (and at sampled points
between syncs), several times with different choices, each a state a kernel
could leave: the durable state plus a random prefix of the pending
namespace operations, and per file the synced bytes plus a random prefix of
its pending writes, the last of them kept or lost 4 KiB block by block. Each
state is written to a fresh directory and checked (powercut check) without
the shim: it opens, holds every acknowledged add, upsert, removal and
attribute change (fsync always: nothing acknowledged may be lost; the one
operation the cut interrupted may be in either state), and verifies.

Three workloads: a collection with fsync always, tqvecd's keyspace with
appendfsync always (sets created, elements added, removed and changed, sets
deleted), and a collection with fsync everysec (whose acknowledgements of
the last second before a cut may be lost, and no others).

Usage: powercut.py POWERCUT_EXE SHIM.so [CUTS]     (CUTS: at least this many; default 2000)
Ends with one line:
  powercut: N cuts, M acknowledged writes checked, L lost, C opened with wrong contents
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile

BLOCK = 4096


def parse(journal):
    """The journal as a list of records: (op, args, data)."""
    recs = []
    with open(journal, "rb") as f:
        buf = f.read()
    pos = 0
    while pos < len(buf):
        end = buf.index(b"\n", pos)
        line = buf[pos:end].decode()
        pos = end + 1
        op, rest = line[0], line[2:]
        if op == "W":
            path, off, n = rest.rsplit(" ", 2)
            off, n = int(off), int(n)
            recs.append(("W", (path, off), buf[pos:pos + n]))
            pos += n
        elif op == "A":
            recs.append(("A", rest, None))
        elif op == "R":
            a, b = rest.split(" ")
            recs.append(("R", (a, b), None))
        elif op in "OT":
            path, num = rest.rsplit(" ", 1)
            recs.append((op, (path, int(num)), None))
        else:
            recs.append((op, rest, None))
    return recs


def parent(path):
    return os.path.dirname(path)


class Model:
    """What the disk holds after records [0, i): per inode its synced bytes
    and its pending writes; the durable and the current namespace."""

    def __init__(self):
        self.data = {}       # inode -> bytearray (current contents)
        self.synced = {}     # inode -> bytes (contents at the last sync)
        self.pending = {}    # inode -> list of ("W", off, bytes) / ("T", len)
        self.current = {}    # path -> inode (files)
        self.durable = {}    # path -> inode (files)
        self.dirs = {""}     # current directories
        self.durable_dirs = {""}
        self.ns = []         # pending namespace operations, in order
        self.next = 0

    def apply(self, rec):
        op, args, payload = rec
        if op == "O":
            path, flags = args
            if path not in self.current:
                ino = self.next
                self.next += 1
                self.current[path] = ino
                self.data[ino], self.synced[ino], self.pending[ino] = bytearray(), b"", []
                self.ns.append(("create", path, ino))
            if flags & os.O_TRUNC:
                ino = self.current[path]
                self.data[ino] = bytearray()
                self.pending[ino].append(("T", 0))
        elif op == "W":
            (path, off), ino = args, self.current[args[0]]
            d = self.data[ino]
            if len(d) < off + len(payload):
                d.extend(b"\0" * (off + len(payload) - len(d)))
            d[off:off + len(payload)] = payload
            self.pending[ino].append(("W", off, payload))
        elif op == "T":
            path, n = args
            ino = self.current[path]
            d = self.data[ino]
            del d[n:]
            d.extend(b"\0" * (n - len(d)))
            self.pending[ino].append(("T", n))
        elif op == "S":
            ino = self.current[args]
            self.synced[ino] = bytes(self.data[ino])
            self.pending[ino] = []
        elif op == "D":
            keep = []
            for nsop in self.ns:
                if self.ns_dir(nsop) == args:
                    self.ns_apply(nsop, self.durable, self.durable_dirs)
                else:
                    keep.append(nsop)
            self.ns = keep
        elif op == "R":
            a, b = args
            if a in self.dirs:  # a directory: everything under it moves
                self.ns_apply(("rename", a, b), self.current, self.dirs)
            else:
                self.current[b] = self.current.pop(a)
            self.ns.append(("rename", a, b))
        elif op == "U":
            self.current.pop(args)
            self.ns.append(("unlink", args))
        elif op == "M":
            self.dirs.add(args)
            self.ns.append(("mkdir", args))

    @staticmethod
    def ns_dir(nsop):
        return parent(nsop[1])

    @staticmethod
    def ns_apply(nsop, files, dirs):
        kind = nsop[0]
        if kind == "create":
            files.setdefault(nsop[1], nsop[2])
        elif kind == "rename":
            a, b = nsop[1], nsop[2]
            if a in files:
                files[b] = files.pop(a)
            elif a in dirs:
                # a directory: its entry moves, and with it all below
                for d in [d for d in dirs if d == a or d.startswith(a + "/")]:
                    dirs.discard(d)
                    dirs.add(b + d[len(a):])
                for f in [f for f in files if f.startswith(a + "/")]:
                    files[b + f[len(a):]] = files.pop(f)
        elif kind == "unlink":
            files.pop(nsop[1], None)
        elif kind == "mkdir":
            dirs.add(nsop[1])

    def crash_state(self, rng, out):
        """Write one state a power cut could leave into out."""
        files, dirs = dict(self.durable), set(self.durable_dirs)
        for nsop in self.ns[:rng.randint(0, len(self.ns))]:
            self.ns_apply(nsop, files, dirs)
        for d in sorted(dirs, key=len):
            if d and all(p in dirs for p in parents(d)):
                os.makedirs(os.path.join(out, d), exist_ok=True)
        for path, ino in files.items():
            if any(p not in dirs for p in parents(path)):
                continue
            content = bytearray(self.synced[ino])
            ops = self.pending[ino]
            kept = rng.randint(0, len(ops))
            for i, pop in enumerate(ops[:kept]):
                if pop[0] == "T":
                    del content[pop[1]:]
                    content.extend(b"\0" * (pop[1] - len(content)))
                    continue
                _, off, payload = pop
                last = i == kept - 1
                for b0 in range(0, len(payload), BLOCK):
                    if last and rng.random() < 0.5:
                        continue  # a block of the last write that did not reach the disk
                    chunk = payload[b0:b0 + BLOCK]
                    at = off + b0
                    if len(content) < at + len(chunk):
                        content.extend(b"\0" * (at + len(chunk) - len(content)))
                    content[at:at + len(chunk)] = chunk
            with open(os.path.join(out, path), "wb") as f:
                f.write(content)


def parents(path):
    out = []
    while True:
        path = parent(path)
        out.append(path)
        if not path:
            return out


def run_workload(exe, mode, check, want, work, rng, totals, failures):
    """Record one workload, then cut and check at least `want` states."""
    root, journal = os.path.join(work, "root"), os.path.join(work, "journal")
    shutil.rmtree(root, ignore_errors=True)
    os.mkdir(root)
    shim = os.environ["POWERCUT_SHIM"]
    env = dict(os.environ, LD_PRELOAD=shim, TQ_POWERCUT=journal, TQ_POWERCUT_ROOT=root)
    subprocess.run([exe, mode, root], env=env, check=True)
    recs = parse(journal)
    syncs = [i + 1 for i, r in enumerate(recs) if r[0] in "SD"]
    between = [i + 1 for i, r in enumerate(recs) if r[0] not in "SDA"]
    # every sync boundary, then sampled points between them, several
    # choices of what survived at each, until `want` cuts
    points = list(syncs)
    points += rng.sample(between, min(len(between), max(0, want // 4 - len(points))))
    points.sort()
    per = max(1, -(-want // len(points)))
    model, applied = Model(), 0
    state = os.path.join(work, "state")
    acks_path = os.path.join(work, "acks")
    for point in points:
        while applied < point:
            model.apply(recs[applied])
            applied += 1
        acks = [r[1] for r in recs[:point] if r[0] == "A"]
        with open(acks_path, "w") as f:
            f.write("\n".join(acks) + "\n")
        # the cut happened after the last acknowledgement before it
        cut = float(acks[-1].rsplit("@", 1)[1]) if acks else 0.0
        for choice in range(per):
            shutil.rmtree(state, ignore_errors=True)
            os.mkdir(state)
            model.crash_state(random.Random(point * 1000 + choice), state)
            args = [exe, check, os.path.join(state, "c"), acks_path] + (["%.6f" % cut] if mode == "work-everysec" else [])
            r = subprocess.run(args, capture_output=True, text=True)
            out = r.stdout.strip()
            totals["cuts"] += 1
            where = "%s: cut after record %d of %d (choice %d)" % (mode, point, len(recs), choice)
            if r.returncode != 0 or not out:
                totals["wrong"] += 1
                failures.append("%s: checker failed: %s" % (where, r.stderr.strip()))
            elif out.split()[0] == "ok":
                totals["checked"] += int(out.split()[1])
            elif out.startswith("ok-uncreated"):
                pass
            elif out.startswith("lost") or out.startswith("unopened"):
                totals["lost"] += 1
                failures.append("%s: %s" % (where, out))
            else:
                totals["wrong"] += 1
                failures.append("%s: %s" % (where, out))
    return len(recs), len(syncs)


def main():
    exe, shim = sys.argv[1:3]
    want = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    os.environ["POWERCUT_SHIM"] = shim
    work = tempfile.mkdtemp(prefix="tqvec-powercut-")
    rng = random.Random(2026)
    totals = {"cuts": 0, "checked": 0, "lost": 0, "wrong": 0}
    failures = []
    try:
        # a collection (fsync always), tqvecd's keyspace (appendfsync
        # always), and a collection under everysec
        for mode, check, share in (("work", "check", 0.5), ("work-daemon", "check-daemon", 0.35),
                                   ("work-everysec", "check", 0.15)):
            n, syncs = run_workload(exe, mode, check, int(want * share) + 1, work, rng, totals, failures)
            print("powercut: %s: %d records, %d sync boundaries" % (mode, n, syncs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures[:20]:
        print(f)
    print("powercut: %d cuts, %d acknowledged writes checked, %d lost, %d opened with wrong contents"
          % (totals["cuts"], totals["checked"], totals["lost"], totals["wrong"]))
    return 0 if not totals["lost"] and not totals["wrong"] and totals["cuts"] >= want else 1


if __name__ == "__main__":
    sys.exit(main())
