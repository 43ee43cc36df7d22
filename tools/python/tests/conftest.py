"""Fixtures shared by the Python tests: where the library and the daemon
are (TQVEC_LIBRARY and TQVECD, set by meson; else the build directories),
a fresh directory per test, and a running tqvecd."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))


def _built(*parts):
    for build in ("build", "build-release"):
        path = os.path.join(ROOT, build, *parts)
        if os.path.exists(path):
            return path
    return None


os.environ.setdefault("TQVEC_LIBRARY", _built("src", "libtqvec.so") or "")
TQVECD = os.environ.get("TQVECD") or _built("src", "daemon", "tqvecd")


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="tqvec-py-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tqvecd(tmpdir_path):
    """A tqvecd on a free port; yields the port."""
    if not TQVECD:
        pytest.skip("tqvecd is not built")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(tmpdir_path, "tqvecd.log"), "wb")
    proc = subprocess.Popen([TQVECD, "--dir", os.path.join(tmpdir_path, "data"), "--port", str(port)],
                            stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
