"""The ctypes binding: every Collection call, numpy in and out, errors
mapped to exceptions, persistence, and agreement between batch and
single-query search."""
import threading

import numpy as np
import pytest

import tqvec


def data(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_add_search_get_remove(tmpdir_path):
    x = data(500, 32)
    with tqvec.Collection.create(tmpdir_path + "/c", dim=32, refine="fp32") as c:
        assert c.add(["k%d" % i for i in range(500)], x, [{"i": i, "even": i % 2 == 0} for i in range(500)]) == 500
        assert len(c) == 500 and c.dim == 32 and c.metric == "cosine"
        hits = c.search(x[7], k=5, rerank=8)
        assert hits[0].key == "k7" and abs(hits[0].score - 1.0) < 1e-5 and hits[0].attrs == {"i": 7, "even": False}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        vec, attrs = c.get("k9")
        assert attrs == {"i": 9, "even": False}
        # cosine keeps the direction and the length apart: the vector comes back as given
        np.testing.assert_allclose(vec, x[9], rtol=1e-3, atol=1e-3 * np.linalg.norm(x[9]))
        assert "k9" in c and "nope" not in c
        # replacing a key keeps the count; removal drops it
        assert c.add(["k9"], x[10:11], [None]) == 0
        assert c.get("k9")[1] is None and len(c) == 500
        assert c.remove(["k9", "k8", "absent"]) == 2 and len(c) == 498
        assert all(h.key not in ("k8", "k9") for h in c.search(x[8], k=20))
        c.set_attrs("k7", {"i": 700})
        assert c.get("k7")[1] == {"i": 700}
        np.testing.assert_array_equal(c.get("k7")[0], c.get("k7")[0])


def test_codebook(tmpdir_path):
    x = data(300, 16, seed=3)
    with tqvec.Collection.create(tmpdir_path + "/v", dim=16, bits=2) as c:
        assert c.info()["codebook"] == "vector"  # the default at 2 bits
        c.add(["k%d" % i for i in range(300)], x)
        assert c.search(x[5], k=1)[0].key == "k5"
    with tqvec.Collection.create(tmpdir_path + "/s", dim=16, bits=2, codebook="scalar") as c:
        assert c.info()["codebook"] == "scalar"
    with tqvec.Collection.open(tmpdir_path + "/v") as c:  # any codebook when none is asked
        assert c.info()["codebook"] == "vector"
    with pytest.raises(tqvec.ArgumentError):
        tqvec.Collection.open(tmpdir_path + "/v", dim=16, bits=2, codebook="scalar")
    with pytest.raises(tqvec.ArgumentError):
        tqvec.Collection.create(tmpdir_path + "/x", dim=16, codebook="pq")
    with pytest.raises(tqvec.ArgumentError):
        tqvec.Collection.create(tmpdir_path + "/y", dim=16, bits=4, codebook="vector")


def test_batch_search_equals_single_queries(tmpdir_path):
    x = data(2000, 48, seed=1)
    q = data(20, 48, seed=2)
    with tqvec.Collection.create(tmpdir_path + "/c", dim=48, metric="l2") as c:
        c.add(range(2000), x)
        batch = c.search(q, k=10)
        assert len(batch) == 20
        for i in range(20):
            assert batch[i] == c.search(q[i], k=10)
        # l2 scores are squared distances, nearest first
        assert batch[0][0].score <= batch[0][-1].score


def test_filter(tmpdir_path):
    x = data(1000, 16, seed=3)
    with tqvec.Collection.create(tmpdir_path + "/c", dim=16) as c:
        c.add(["e%d" % i for i in range(1000)], x, [{"g": i % 100, "name": "n%d" % i} for i in range(1000)])
        hits = c.search(x[0], k=50, filter=".g == 42")
        assert len(hits) == 10 and all(h.attrs["g"] == 42 for h in hits)
        assert c.search(x[0], k=5, filter='.name == "n999"')[0].key == "e999"
        with pytest.raises(tqvec.ArgumentError, match="syntax error in FILTER expression"):
            c.search(x[0], filter=".g ==")


def test_keys_and_attributes_of_any_bytes(tmpdir_path):
    with tqvec.Collection.create(tmpdir_path + "/c", dim=4) as c:
        c.add(["é日本", b"\xff\x00raw", 17], np.eye(4, dtype=np.float32)[:3],
              ['{"t": "ü"}', b"not json", {"list": [1, 2]}])
        assert c.get("é日本")[1] == {"t": "ü"}
        assert c.get(b"\xff\x00raw")[1] == "not json"
        assert c.get("17")[1] == {"list": [1, 2]}
        keys = {h.key for h in c.search(np.ones(4, dtype=np.float32), k=3)}
        assert keys == {"é日本", b"\xff\x00raw", "17"}


def test_errors_are_exceptions(tmpdir_path):
    with tqvec.Collection.create(tmpdir_path + "/c", dim=8) as c:
        with pytest.raises(tqvec.DimensionError):
            c.add(["a"], np.zeros((1, 9), dtype=np.float32))
        with pytest.raises(tqvec.InvalidValueError, match="non-finite"):
            c.add(["a", "b"], np.array([[1] * 8, [np.nan] * 8], dtype=np.float32))
        assert len(c) == 0  # all or nothing
        c.add(["z"], np.zeros((1, 8), dtype=np.float32))  # a zero vector under cosine: stored, similar to nothing
        assert len(c) == 1
        c.remove("z")
        with pytest.raises(KeyError):
            c.get("missing")
        with pytest.raises(tqvec.ArgumentError):
            c.add(["a", "b"], np.ones((1, 8), dtype=np.float32))
        with pytest.raises(tqvec.BusyError):
            tqvec.Collection.open(tmpdir_path + "/c")
    with pytest.raises(tqvec.ArgumentError, match="refine"):
        tqvec.Collection.create(tmpdir_path + "/d", dim=8, refine="fp64")
    with pytest.raises(tqvec.NotFoundError):
        tqvec.Collection.open(tmpdir_path + "/never-created")
    with pytest.raises(tqvec.ArgumentError, match="closed"):
        c.search(np.ones(8, dtype=np.float32))


def test_persists_across_reopen(tmpdir_path):
    x = data(300, 24, seed=4)
    path = tmpdir_path + "/c"
    with tqvec.Collection.create(path, dim=24, refine="code8", fsync="always") as c:
        c.add(["r%d" % i for i in range(300)], x, [{"i": i} for i in range(300)])
        before = c.search(x[:5], k=7, rerank=4)
        c.compact()
        c.verify()
    with tqvec.Collection.open(path) as c:
        info = c.info()
        assert info["count"] == 300 and info["refine"] == "code8" and info["segments"] >= 1
        assert c.search(x[:5], k=7, rerank=4) == before


def test_searches_from_threads(tmpdir_path):
    x = data(3000, 32, seed=5)
    with tqvec.Collection.create(tmpdir_path + "/c", dim=32) as c:
        c.add(range(3000), x)
        want = c.search(x[:40], k=5)
        got = [None] * 40
        def work(lo):
            for i in range(lo, 40, 4):
                got[i] = c.search(x[i], k=5)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert got == want


def test_version():
    assert tqvec.version().count(".") == 2 and tqvec.simd_level() in ("scalar", "avx2", "avx512")
