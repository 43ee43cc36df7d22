"""A vector store for RAG pipelines over tqvec: in process (a Collection) or
through tqvecd with redis-py (VADD/VSIM), with the method names LangChain's
VectorStore has.

    from tqvec.vectorstore import TqvecVectorStore
    store = TqvecVectorStore.open("/var/lib/rag/chunks", embed)       # in process
    store = TqvecVectorStore.from_redis(redis.Redis(port=6380), "chunks", embed)
    store.add_texts(["first passage", "second"], metadatas=[{"source": "a"}, {"source": "b"}])
    for doc, score in store.similarity_search_with_score("question", k=4, filter={"source": "a"}):
        print(score, doc.page_content, doc.metadata)

`embed` is a LangChain Embeddings object (embed_documents/embed_query) or a
plain function from a list of texts to an (n, dim) array. Without LangChain
installed the store is a plain class and returns its own Document type;
with langchain_core installed it subclasses langchain_core's VectorStore
and returns its Documents.

Each chunk is one element: its id is the key, the text and the metadata
are its JSON attributes (metadata fields at the top level, so FILTER
expressions reach them; the text under "_text"). Scores are relevance in
[0, 1], higher is nearer: (1 + cosine) / 2, as Redis vector sets report
them, for the cosine sets the store creates.
"""

import json
import tempfile
import uuid
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import Collection, NotFoundError

TEXT_FIELD = "_text"

try:  # pragma: no cover - exercised only where LangChain is installed
    from langchain_core.documents import Document
    from langchain_core.vectorstores import VectorStore as _Base
except ImportError:
    _Base = object

    class Document:
        """A chunk of text with its metadata (LangChain's shape)."""

        def __init__(self, page_content: str, metadata: Optional[dict] = None, id: Optional[str] = None):
            self.page_content = page_content
            self.metadata = metadata or {}
            self.id = id

        def __repr__(self):
            return "Document(id=%r, page_content=%r, metadata=%r)" % (self.id, self.page_content[:40], self.metadata)

        def __eq__(self, other):
            return (isinstance(other, Document) and self.page_content == other.page_content
                    and self.metadata == other.metadata and self.id == other.id)


# --------------------------------------------------------------- filters

def _literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise ValueError("filter values are strings, numbers or booleans, not %r" % (v,))


def filter_expression(flt: Union[None, str, dict]) -> Optional[str]:
    """A FILTER expression from LangChain's dict form ({"field": value},
    {"field": [v1, v2]} for membership; every pair must hold) or a string
    (passed through: the Redis vector-set FILTER language)."""
    if flt is None or isinstance(flt, str):
        return flt
    parts = []
    for field, value in flt.items():
        if not field.replace("_", "a").isalnum():
            raise ValueError("filter field %r: letters, digits and _ only" % field)
        if isinstance(value, (list, tuple)):
            parts.append(".%s in [%s]" % (field, ", ".join(_literal(v) for v in value)))
        else:
            parts.append(".%s == %s" % (field, _literal(value)))
    return " and ".join(parts) if parts else None


def _attrs_for(text: str, metadata: Optional[dict]) -> dict:
    md = dict(metadata or {})
    if TEXT_FIELD in md:
        raise ValueError("metadata must not use the reserved field %r" % TEXT_FIELD)
    md[TEXT_FIELD] = text
    return md


def _document(key: str, attrs) -> Document:
    if not isinstance(attrs, dict):
        attrs = {}
    md = {k: v for k, v in attrs.items() if k != TEXT_FIELD}
    return Document(page_content=attrs.get(TEXT_FIELD, ""), metadata=md, id=key)


# -------------------------------------------------------------- backends

class _LocalBackend:
    """A Collection in this process; created on the first add when absent."""

    def __init__(self, path: str, metric: str, refine: str, collection: Optional[Collection] = None):
        self.path, self.metric, self.refine = path, metric, refine
        self.collection = collection
        if collection is None:
            try:
                self.collection = Collection.open(path)
            except NotFoundError:
                pass

    def add(self, ids, vectors, attrs):
        if self.collection is None:
            self.collection = Collection.create(self.path, dim=vectors.shape[1], metric=self.metric,
                                                refine=self.refine)
        self.collection.add(ids, vectors, attrs)

    def search(self, vectors, k, flt, rerank):
        if self.collection is None:
            return [[] for _ in range(len(vectors))]
        found = self.collection.search(vectors, k=k, filter=flt, rerank=rerank)
        cosine = self.metric == "cosine"
        return [[(m.key, (1.0 + m.score) / 2.0 if cosine else m.score, m.attrs) for m in one] for one in found]

    def delete(self, ids):
        return self.collection.remove(ids) if self.collection is not None else 0

    def get(self, ids):
        if self.collection is None:
            return []
        out = []
        for i in ids:
            try:
                out.append((i, self.collection.get(i, with_vector=False)[1]))
            except NotFoundError:
                continue
        return out

    def close(self):
        if self.collection is not None:
            self.collection.close()


class _RedisBackend:
    """A vector set on tqvecd (or Redis 8) through redis-py."""

    def __init__(self, client, key: str, quant: str = "Q8", rerank_ef: Optional[int] = None):
        self.client, self.key, self.quant, self.ef = client, key, quant, rerank_ef

    def add(self, ids, vectors, attrs):
        pipe = self.client.pipeline(transaction=False)
        for i, v, a in zip(ids, vectors, attrs):
            pipe.execute_command("VADD", self.key, "FP32", v.astype("<f4").tobytes(), i, self.quant,
                                 "SETATTR", json.dumps(a, ensure_ascii=False, separators=(",", ":")))
        pipe.execute()

    def search(self, vectors, k, flt, rerank):
        pipe = self.client.pipeline(transaction=False)
        for v in vectors:
            args = ["VSIM", self.key, "FP32", v.astype("<f4").tobytes(), "WITHSCORES", "WITHATTRIBS", "COUNT", k]
            if rerank:
                args += ["EF", k * rerank]
            if flt:
                args += ["FILTER", flt]
            pipe.execute_command(*args)
        out = []
        for reply in pipe.execute():
            rows = []
            for j in range(0, len(reply), 3):
                key = reply[j].decode() if isinstance(reply[j], bytes) else reply[j]
                attrs = json.loads(reply[j + 2]) if reply[j + 2] else None
                rows.append((key, float(reply[j + 1]), attrs))
            out.append(rows)
        return out

    def delete(self, ids):
        pipe = self.client.pipeline(transaction=False)
        for i in ids:
            pipe.execute_command("VREM", self.key, i)
        return sum(int(r) for r in pipe.execute())

    def get(self, ids):
        pipe = self.client.pipeline(transaction=False)
        for i in ids:
            pipe.execute_command("VGETATTR", self.key, i)
        return [(i, json.loads(a)) for i, a in zip(ids, pipe.execute()) if a is not None]

    def close(self):
        pass


# ----------------------------------------------------------------- store

def _embed_fn(embedding):
    if hasattr(embedding, "embed_documents"):
        return embedding.embed_documents, embedding.embed_query
    if callable(embedding):
        return embedding, lambda text: embedding([text])[0]
    raise TypeError("embedding must have embed_documents/embed_query or be a function of a list of texts")


class TqvecVectorStore(_Base):
    """A vector store over a tqvec collection or a tqvecd vector set."""

    def __init__(self, embedding, backend, rerank: int = 0):
        self._embedding = embedding
        self._embed_documents, self._embed_query = _embed_fn(embedding)
        self._backend = backend
        self.rerank = rerank

    # ------------------------------------------------------ constructors
    @classmethod
    def open(cls, path: str, embedding, *, metric: str = "cosine", refine: str = "fp16",
             rerank: int = 4) -> "TqvecVectorStore":
        """A store in the collection directory path (created on the first
        add). fp16 refine data with rerank 4 re-scores 4k candidates on
        half floats: recall near 1.0 for twice the bytes of the codes."""
        return cls(embedding, _LocalBackend(path, metric, refine), rerank=rerank if refine != "none" else 0)

    @classmethod
    def from_collection(cls, collection: Collection, embedding, rerank: int = 0) -> "TqvecVectorStore":
        return cls(embedding, _LocalBackend(collection.path, collection.metric, "none", collection), rerank=rerank)

    @classmethod
    def from_redis(cls, client, key: str, embedding, *, quant: str = "Q8", rerank: int = 0) -> "TqvecVectorStore":
        """A store in the vector set `key` of the server behind a redis-py client."""
        return cls(embedding, _RedisBackend(client, key, quant), rerank=rerank)

    @classmethod
    def from_texts(cls, texts: List[str], embedding, metadatas: Optional[List[dict]] = None,
                   ids: Optional[List[str]] = None, *, path: Optional[str] = None, **kwargs) -> "TqvecVectorStore":
        """LangChain's constructor: a new store holding texts (in a fresh
        temporary directory unless path is given)."""
        store = cls.open(path or tempfile.mkdtemp(prefix="tqvec-store-"), embedding, **kwargs)
        store.add_texts(texts, metadatas=metadatas, ids=ids)
        return store

    @property
    def embeddings(self):
        return self._embedding

    def close(self):
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ writes
    def add_embeddings(self, text_embeddings: Iterable[Tuple[str, Sequence[float]]],
                       metadatas: Optional[List[dict]] = None, ids: Optional[List[str]] = None,
                       **kwargs) -> List[str]:
        """Add (text, vector) pairs already embedded; returns their ids
        (new UUIDs where none are given). A known id is replaced."""
        pairs = list(text_embeddings)
        if not pairs:
            return []
        texts = [t for t, _ in pairs]
        vectors = np.asarray([v for _, v in pairs], dtype=np.float32)
        ids = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in texts]
        metadatas = list(metadatas) if metadatas is not None else [None] * len(texts)
        if not (len(ids) == len(texts) == len(metadatas)):
            raise ValueError("%d texts, %d ids and %d metadatas" % (len(texts), len(ids), len(metadatas)))
        self._backend.add(ids, vectors, [_attrs_for(t, m) for t, m in zip(texts, metadatas)])
        return ids

    def add_texts(self, texts: Iterable[str], metadatas: Optional[List[dict]] = None,
                  ids: Optional[List[str]] = None, **kwargs) -> List[str]:
        texts = list(texts)
        if not texts:
            return []
        vectors = np.asarray(self._embed_documents(texts), dtype=np.float32)
        return self.add_embeddings(zip(texts, vectors), metadatas=metadatas, ids=ids)

    def add_documents(self, documents: List[Document], ids: Optional[List[str]] = None, **kwargs) -> List[str]:
        if ids is None and all(getattr(d, "id", None) for d in documents):
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids)

    def delete(self, ids: Optional[List[str]] = None, **kwargs) -> Optional[bool]:
        """Remove ids; True if every one existed."""
        if not ids:
            return None
        return self._backend.delete(list(ids)) == len(ids)

    # ------------------------------------------------------------- reads
    def get_by_ids(self, ids: Sequence[str]) -> List[Document]:
        """The documents of the ids that exist, in the order asked."""
        return [_document(i, a) for i, a in self._backend.get(list(ids))]

    def similarity_search_by_vector_with_score(self, embedding: Sequence[float], k: int = 4,
                                               filter: Union[None, str, dict] = None,
                                               **kwargs) -> List[Tuple[Document, float]]:
        v = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        rows = self._backend.search(v, k, filter_expression(filter), self.rerank)[0]
        return [(_document(key, attrs), score) for key, score, attrs in rows]

    def similarity_search_by_vector(self, embedding: Sequence[float], k: int = 4,
                                    filter: Union[None, str, dict] = None, **kwargs) -> List[Document]:
        return [d for d, _ in self.similarity_search_by_vector_with_score(embedding, k, filter)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Union[None, str, dict] = None,
                                     **kwargs) -> List[Tuple[Document, float]]:
        """Documents with relevance in [0, 1], higher is nearer."""
        return self.similarity_search_by_vector_with_score(self._embed_query(query), k, filter)

    def similarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                filter: Union[None, str, dict] = None,
                                                score_threshold: Optional[float] = None,
                                                **kwargs) -> List[Tuple[Document, float]]:
        found = self.similarity_search_with_score(query, k, filter)
        if score_threshold is not None:
            found = [(d, s) for d, s in found if s >= score_threshold]
        return found

    def similarity_search(self, query: str, k: int = 4, filter: Union[None, str, dict] = None,
                          **kwargs) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: score  # already relevance in [0, 1]
