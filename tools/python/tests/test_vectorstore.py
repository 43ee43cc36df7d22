"""The vector-store adapter, in process and through tqvecd with redis-py:
the same behaviour from both backends, relevance scores in [0, 1], filters
in dict and string form, deletes and gets by id; and the worked example."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tqvec.vectorstore import Document, TqvecVectorStore, filter_expression

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
from rag_licenses import HashingEmbedding  # noqa: E402

TEXTS = [
    ("the cat sat on the mat", {"kind": "pet", "year": 2001}),
    ("a dog chased the cat around the garden", {"kind": "pet", "year": 2005}),
    ("stock markets fell sharply on monday", {"kind": "news", "year": 2010}),
    ("the central bank raised interest rates", {"kind": "news", "year": 2012}),
    ("my cat likes to sleep in the sun", {"kind": "pet", "year": 2020}),
]


def make_store(backend, path, port):
    emb = HashingEmbedding(dim=256)
    if backend == "local":
        return TqvecVectorStore.open(path + "/store", emb)
    redis = pytest.importorskip("redis")
    return TqvecVectorStore.from_redis(redis.Redis(port=port), "docs", emb, quant="NOQUANT")


@pytest.fixture(params=["local", "redis"])
def store(request, tmpdir_path):
    port = request.getfixturevalue("tqvecd") if request.param == "redis" else None
    s = make_store(request.param, tmpdir_path, port)
    ids = s.add_texts([t for t, _ in TEXTS], metadatas=[m for _, m in TEXTS], ids=["d%d" % i for i in range(5)])
    assert ids == ["d0", "d1", "d2", "d3", "d4"]
    yield s
    s.close()


def test_search_and_scores(store):
    found = store.similarity_search_with_score("my cat likes to sleep", k=3)
    assert len(found) == 3
    assert found[0][0].id == "d4" and found[0][0].page_content == TEXTS[4][0]
    assert found[0][0].metadata == {"kind": "pet", "year": 2020}
    scores = [s for _, s in found]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    docs = store.similarity_search("interest rates and banks", k=1)
    assert docs[0].id == "d3"
    v = store.embeddings.embed_query("stock markets")
    assert store.similarity_search_by_vector(v, k=1)[0].id == "d2"
    rel = store.similarity_search_with_relevance_scores("cat", k=5, score_threshold=0.99)
    assert all(s >= 0.99 for _, s in rel)


def test_filters(store):
    docs = store.similarity_search("cat", k=5, filter={"kind": "news"})
    assert {d.id for d in docs} == {"d2", "d3"}
    docs = store.similarity_search("cat", k=5, filter={"year": [2001, 2020]})
    assert {d.id for d in docs} == {"d0", "d4"}
    docs = store.similarity_search("cat", k=5, filter=".year >= 2010 and .kind == 'pet'")
    assert [d.id for d in docs] == ["d4"]
    assert store.similarity_search("cat", k=5, filter={"kind": "nothing"}) == []


def test_delete_and_get_by_ids(store):
    got = store.get_by_ids(["d1", "missing", "d3"])
    assert [d.id for d in got] == ["d1", "d3"] and got[0].metadata["year"] == 2005
    assert store.delete(["d1", "d3"]) is True
    assert store.delete(["d1"]) is False
    assert store.get_by_ids(["d1", "d3"]) == []
    assert all(d.id not in ("d1", "d3") for d in store.similarity_search("cat", k=5))
    # a known id is replaced, not duplicated
    store.add_texts(["a parrot on the mat"], metadatas=[{"kind": "bird"}], ids=["d0"])
    assert store.get_by_ids(["d0"])[0].metadata == {"kind": "bird"}
    assert len(store.similarity_search("mat", k=10)) == 3


def test_add_embeddings_and_documents(store):
    emb = store.embeddings
    ids = store.add_embeddings([("pre-embedded text", emb.embed_query("pre-embedded text"))], ids=["e1"])
    assert ids == ["e1"] and store.similarity_search("pre-embedded text", k=1)[0].id == "e1"
    ids = store.add_documents([Document("a document about rivers", {"kind": "geo"}, id="g1")])
    assert ids == ["g1"] and store.similarity_search("rivers", k=1)[0].metadata == {"kind": "geo"}
    fresh = store.add_texts(["no id given"])
    assert len(fresh) == 1 and len(fresh[0]) == 36  # a UUID


def test_backends_agree(tmpdir_path, tqvecd):
    """The same texts and queries give the same top documents in process and
    over the socket (both keep fp-accurate refine data)."""
    local, remote = make_store("local", tmpdir_path, None), make_store("redis", tmpdir_path, tqvecd)
    texts = [t for t, _ in TEXTS] * 1
    for s in (local, remote):
        s.add_texts(texts, metadatas=[m for _, m in TEXTS], ids=["d%d" % i for i in range(5)])
    for q in ("cat", "bank", "garden dog", "markets"):
        a = [(d.id, round(sc, 3)) for d, sc in local.similarity_search_with_score(q, k=3)]
        b = [(d.id, round(sc, 3)) for d, sc in remote.similarity_search_with_score(q, k=3)]
        assert [x for x, _ in a] == [x for x, _ in b], (q, a, b)
        assert all(abs(x - y) < 0.01 for (_, x), (_, y) in zip(a, b)), (q, a, b)
    local.close()


def test_from_texts_and_reopen(tmpdir_path):
    emb = HashingEmbedding(dim=128)
    path = tmpdir_path + "/ft"
    s = TqvecVectorStore.from_texts(["alpha beta", "gamma delta"], emb, metadatas=[{"n": 1}, {"n": 2}],
                                    ids=["a", "g"], path=path)
    s.close()
    s = TqvecVectorStore.open(path, emb)
    assert s.similarity_search("gamma", k=1)[0].id == "g"
    s.close()


def test_filter_expression():
    assert filter_expression({"a": "x", "b": 2}) == '.a == "x" and .b == 2'
    assert filter_expression({"t": [1, "two"], "ok": True}) == '.t in [1, "two"] and .ok == true'
    assert filter_expression(".x > 1") == ".x > 1" and filter_expression(None) is None
    with pytest.raises(ValueError):
        filter_expression({"bad field": 1})
    with pytest.raises(ValueError):
        filter_expression({"a": {"nested": 1}})


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_worked_example(backend, tmpdir_path, request):
    if not os.path.exists("/usr/share/common-licenses/GPL-3"):
        pytest.skip("base-files' license texts are missing")
    args = [sys.executable, os.path.join(HERE, "..", "examples", "rag_licenses.py"), "-k", "2"]
    if backend == "redis":
        pytest.importorskip("redis")
        args += ["--server", "127.0.0.1:%d" % request.getfixturevalue("tqvecd")]
    else:
        args += ["--dir", tmpdir_path + "/lic"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "indexed" in out.stdout and "passages" in out.stdout
    # the patent question finds a patent clause; the filter keeps to the GPL
    patent = out.stdout.split("Q: What happens to my patent")[1].split("\nQ")[0]
    assert "atent" in patent.split("\n")[1]
    gpl_only = out.stdout.split("Q (only the GPL-3)")[1]
    assert gpl_only.count("[GPL-3#") == 2
