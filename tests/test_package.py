#!/usr/bin/python3
"""Installing tqvec as a user would (meson suite `package`).

1. tools/package builds the Debian packages and passes lintian (it fails on
   any warning); every file lands at its FHS path (dpkg-deb -c).
2. The packages are extracted (dpkg -x, nothing installed on the machine):
   the extracted tqvecd runs with the extracted /etc/tqvecd.conf (its data
   directory and port overridden after it), tells a stand-in service
   manager READY=1 on $NOTIFY_SOCKET as systemd's Type=notify expects, and
   answers redis-cli; --version names the revision and SIMD level.
3. systemd-analyze verify accepts the unit, where systemd-analyze exists.
4. The Python package, with no environment variables set, finds its
   library and searches a collection: from the extracted python3-tqvec,
   from a `meson install --destdir` tree, and installed with
   `pip install --no-build-isolation` (library found by its SONAME).

Usage: test_package.py SOURCE_ROOT BUILD_DIR
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT, BUILD = (os.path.abspath(a) for a in sys.argv[1:3])
PY = "/usr/bin/python3"  # Debian's, which has numpy

EXPECTED = {
    "tqvec": ["./usr/bin/tqvec", "./usr/bin/tqvecd", "./etc/tqvecd.conf", "./lib/systemd/system/tqvecd.service",
              "./usr/share/man/man1/tqvec.1.gz", "./usr/share/man/man1/tqvecd.1.gz",
              "./usr/share/man/man5/tqvecd.conf.5.gz", "./usr/share/doc/tqvec/copyright"],
    "libtqvec0": ["./usr/lib/x86_64-linux-gnu/libtqvec.so.0", "./usr/lib/x86_64-linux-gnu/libtqvec.so.0.2.0"],
    "libtqvec-dev": ["./usr/include/tqvec.h", "./usr/lib/x86_64-linux-gnu/libtqvec.so",
                     "./usr/lib/x86_64-linux-gnu/pkgconfig/tqvec.pc"],
    "python3-tqvec": ["./usr/lib/python3/dist-packages/tqvec/__init__.py",
                      "./usr/lib/python3/dist-packages/tqvec/vectorstore.py",
                      "./usr/lib/python3/dist-packages/tqvec/_install.py"],
}

# Searches a fresh collection and checks the nearest neighbour of a stored
# vector is itself; run in a clean interpreter with sys.path[0] = argv[1].
SEARCH = r"""
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import numpy as np, tqvec
assert tqvec.__file__.startswith(sys.argv[1]), tqvec.__file__
where = tqvec._lib._name
x = np.random.default_rng(5).standard_normal((500, 32)).astype(np.float32)
with tqvec.Collection.create(os.path.join(tempfile.mkdtemp(), "c"), dim=32, refine="fp16") as c:
    c.add([f"k{i}" for i in range(500)], x)
    hits = c.search(x[123], k=3, rerank=4)
    assert hits.keys[0] == "k123", hits.keys
print(where)
"""

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*cmd, env=None, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, env=env, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_from(site, env=None):
    """The library path the package loaded, searching a collection."""
    return run(PY, "-c", SEARCH, site, env=env if env is not None else {}).strip()


def main():
    tmp = tempfile.mkdtemp(prefix="tqvec-package-")
    try:
        out = os.path.join(tmp, "debs")
        subprocess.run([os.path.join(ROOT, "tools", "package"), out], check=True)
        debs = {f.split("_")[0]: os.path.join(out, f) for f in os.listdir(out) if f.endswith(".deb")
                and "-dbgsym" not in f}
        check(sorted(debs) == sorted(EXPECTED), "packages built: %s" % ", ".join(sorted(debs)))
        for name, paths in EXPECTED.items():
            listing = run("dpkg-deb", "-c", debs[name])
            files = {line.split()[5] for line in listing.splitlines()}
            missing = [p for p in paths if p not in files]
            check(not missing, "%s holds %d files at their paths%s" % (name, len(paths),
                                                                      " (missing %s)" % missing if missing else ""))

        root = os.path.join(tmp, "root")
        for deb in debs.values():
            run("dpkg", "-x", deb, root)
        tqvecd = os.path.join(root, "usr/bin/tqvecd")
        conf = os.path.join(root, "etc/tqvecd.conf")
        version = run(tqvecd, "--version")
        check(version.startswith("tqvecd 0.2.0 (revision ") and "simd" in version and "unknown" not in version,
              "tqvecd --version: " + version.strip())
        version = run(os.path.join(root, "usr/bin/tqvec"), "--version")
        check("revision" in version and "unknown" not in version, "tqvec --version: " + version.strip())

        # The daemon as the service runs it, with a stand-in for systemd's
        # notification socket.
        notify_path = os.path.join(tmp, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(20)
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify_path}
        daemon = subprocess.Popen([tqvecd, "--config", conf, "--dir", os.path.join(tmp, "data"), "--port", str(port)],
                                  env=env, stderr=subprocess.PIPE, text=True)
        try:
            ready = notify.recv(4096).decode()
            # It started, so the shipped file parsed: an unknown option or
            # a bad value stops the daemon before it listens.
            check(ready.startswith("READY=1"), "started with the shipped config; READY=1 on $NOTIFY_SOCKET (%r)" % ready)
            cli = ["redis-cli", "-p", str(port)]
            check(run(*cli, "VADD", "docs", "VALUES", 3, "1", "0", "0", "a").strip() == "1", "redis-cli VADD")
            run(*cli, "VADD", "docs", "VALUES", 3, "0", "1", "0", "b")
            run(*cli, "VADD", "docs", "VALUES", 3, "0.9", "0.1", "0", "c")
            answer = run(*cli, "VSIM", "docs", "VALUES", 3, "1", "0", "0").split()
            check(answer == ["a", "c", "b"], "redis-cli VSIM answers from the extracted daemon: %s" % answer)
            daemon.terminate()
            check(daemon.wait(30) == 0, "SIGTERM stops it cleanly")
            stopping = notify.recv(4096).decode()
            check(stopping.startswith("STOPPING=1"), "STOPPING=1 on the way out")
        finally:
            if daemon.poll() is None:
                daemon.kill()
            notify.close()

        analyze = shutil.which("systemd-analyze")
        if analyze:
            unit = open(os.path.join(root, "lib/systemd/system/tqvecd.service")).read()
            check("Type=notify" in unit and "DynamicUser=yes" in unit and "StateDirectory=tqvecd" in unit and
                  "ExecStart=/usr/bin/tqvecd --config /etc/tqvecd.conf" in unit, "unit: notify, own user, state dir")
            # verify wants ExecStart's binary to exist: point it at the
            # extracted one.
            staged = os.path.join(tmp, "tqvecd.service")
            with open(staged, "w") as f:
                f.write(unit.replace("/usr/bin/tqvecd", tqvecd).replace("/etc/tqvecd.conf", conf))
            r = subprocess.run([analyze, "verify", "--man=no", staged], capture_output=True, text=True)
            check(r.returncode == 0 and not r.stderr.strip(), "systemd-analyze verify: %s" % (r.stderr.strip() or "clean"))
        else:
            print("SKIP systemd-analyze verify: systemd-analyze not installed")

        # Python, three ways, none with environment variables.
        site = os.path.join(root, "usr/lib/python3/dist-packages")
        lib = search_from(site)
        check(lib == os.path.join(root, "usr/lib/x86_64-linux-gnu/libtqvec.so.0"),
              "python3-tqvec (extracted) finds the extracted libtqvec.so.0: " + lib)

        stage = os.path.join(tmp, "stage")
        run("meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", stage)
        sites = [d for d, _, files in os.walk(stage) if "_install.py" in files]
        check(len(sites) == 1, "meson install --destdir puts one tqvec package in site-packages")
        lib = search_from(os.path.dirname(sites[0]))
        check(lib.startswith(stage) and lib.endswith("libtqvec.so.0"),
              "the package from meson install --destdir finds the staged library: " + lib)

        venv = os.path.join(tmp, "venv")
        run(PY, "-m", "venv", "--system-site-packages", venv)
        # pip builds in the source folder: build a copy, not the tree
        src = os.path.join(tmp, "python-src")
        shutil.copytree(os.path.join(ROOT, "tools", "python"), src)
        run(os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation", "--no-index", "--quiet", src)
        vsite = run(os.path.join(venv, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
        # As if libtqvec0 were installed: the loader finds it by SONAME.
        lib = search_from(vsite.strip(), env={"LD_LIBRARY_PATH": os.path.join(root, "usr/lib/x86_64-linux-gnu")})
        check(lib == "libtqvec.so.0", "pip install --no-build-isolation: the library found by its SONAME")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("package: %d checks failed" % len(failures) if failures else "package: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
