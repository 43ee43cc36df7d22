"""tqvec for Python: stored collections of TurboQuant-coded vectors, in process.

A ctypes binding over libtqvec (no compiled extension): vectors go in and
come out as numpy float32 arrays, and batches cross into C in one call —
element tables are built with numpy, results are read from one array per
query — so no hot path loops in Python per vector.

    import numpy as np, tqvec
    with tqvec.Collection.create("/tmp/docs", dim=384, metric="cosine", refine="fp16") as c:
        c.add(["a", "b"], np.random.rand(2, 384).astype(np.float32), [{"year": 1999}, None])
        for m in c.search(query, k=5, filter=".year > 1990"):   # Hits: .keys, .scores, .attrs; iterates as Match
            print(m.key, m.score, m.attrs)

The library is found through $TQVEC_LIBRARY; for a package installed by
meson, at the library directory it was installed beside (the same relative
position, so a staged or moved tree works too); then the build directories
of this source tree; then by its SONAME on the system's library path (a
pip install, or the Debian package).
"""

import ctypes
import ctypes.util
import itertools
import json
import os
import threading
from typing import Iterable, List, NamedTuple, Optional, Sequence, Union

import numpy as np

__all__ = [
    "Collection", "Match", "Hits", "TqvecError", "ArgumentError", "DimensionError", "InvalidValueError",
    "NotFoundError", "CorruptError", "StorageError", "OutOfMemoryError", "BusyError", "UnsupportedError",
    "version", "simd_level",
]

# --------------------------------------------------------------- errors


class TqvecError(Exception):
    """A tqvec call failed; .code is the TQVEC_E* code, str() its message."""

    code = -1

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ArgumentError(TqvecError, ValueError):
    code = 1


class DimensionError(TqvecError, ValueError):
    code = 2


class InvalidValueError(TqvecError, ValueError):
    """NaN or infinity, or a zero vector under cosine."""
    code = 3


class NotFoundError(TqvecError, KeyError):
    code = 4

    def __str__(self):  # KeyError would quote the message
        return Exception.__str__(self)


class CorruptError(TqvecError):
    code = 5


class StorageError(TqvecError, OSError):
    code = 6


class OutOfMemoryError(TqvecError, MemoryError):
    code = 7


class BusyError(TqvecError):
    """The directory is open in another process."""
    code = 8


class UnsupportedError(TqvecError):
    code = 9


_ERRORS = {cls.code: cls for cls in (ArgumentError, DimensionError, InvalidValueError, NotFoundError,
                                     CorruptError, StorageError, OutOfMemoryError, BusyError, UnsupportedError)}

# -------------------------------------------------------------- library


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("sys_errno", ctypes.c_int), ("message", ctypes.c_char * 256)]


class _Element(ctypes.Structure):
    _fields_ = [("key", ctypes.c_void_p), ("key_len", ctypes.c_size_t), ("vector", ctypes.c_void_p),
                ("attrs", ctypes.c_void_p), ("attrs_len", ctypes.c_size_t)]


class _ResultsOut(ctypes.Structure):
    _fields_ = [("scores", ctypes.c_void_p), ("key_lens", ctypes.c_void_p), ("keys", ctypes.c_void_p),
                ("keys_cap", ctypes.c_size_t), ("attrs_lens", ctypes.c_void_p), ("attrs", ctypes.c_void_p),
                ("attrs_cap", ctypes.c_size_t), ("count", ctypes.c_size_t), ("keys_bytes", ctypes.c_size_t),
                ("attrs_bytes", ctypes.c_size_t)]


class _SearchParams(ctypes.Structure):
    _fields_ = [("k", ctypes.c_uint32), ("rerank", ctypes.c_uint32), ("scorer", ctypes.c_uint32),
                ("threads", ctypes.c_uint32), ("nprobe", ctypes.c_uint32), ("target_recall", ctypes.c_float),
                ("reserved", ctypes.c_uint32 * 2),
                ("filter", ctypes.c_char_p)]


class _Options(ctypes.Structure):
    _fields_ = [("dim", ctypes.c_uint32), ("metric", ctypes.c_int), ("bits", ctypes.c_int),
                ("variant", ctypes.c_int), ("correction", ctypes.c_int), ("seed", ctypes.c_uint64),
                ("refine", ctypes.c_int), ("center", ctypes.c_int), ("create", ctypes.c_int),
                ("fsync", ctypes.c_int), ("segment_rows", ctypes.c_uint32), ("verify", ctypes.c_int),
                ("log", ctypes.c_void_p), ("log_ctx", ctypes.c_void_p), ("partition_rows", ctypes.c_uint32),
                ("merge_factor", ctypes.c_uint32), ("codebook", ctypes.c_int), ("reserved", ctypes.c_uint32 * 5)]


class _Info(ctypes.Structure):
    _fields_ = [("dim", ctypes.c_uint32), ("metric", ctypes.c_int), ("bits", ctypes.c_int),
                ("variant", ctypes.c_int), ("correction", ctypes.c_int), ("refine", ctypes.c_int),
                ("center", ctypes.c_int), ("seed", ctypes.c_uint64), ("count", ctypes.c_uint64),
                ("deleted", ctypes.c_uint64), ("segments", ctypes.c_uint32), ("unsealed", ctypes.c_uint64),
                ("log_bytes", ctypes.c_uint64), ("torn_bytes", ctypes.c_uint64),
                ("bytes_per_vector", ctypes.c_uint64), ("refine_bytes_per_vector", ctypes.c_uint64),
                ("simd", ctypes.c_char_p), ("codebook", ctypes.c_int)]


# The element table as numpy builds it: the same bytes as _Element.
_ELEMENT_DTYPE = np.dtype([("key", np.uintp), ("key_len", np.uintp), ("vector", np.uintp),
                           ("attrs", np.uintp), ("attrs_len", np.uintp)])
assert _ELEMENT_DTYPE.itemsize == ctypes.sizeof(_Element)


SONAME = "libtqvec.so.0"


def _find_library():
    env = os.environ.get("TQVEC_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from . import _install  # written by meson install
    except ImportError:
        _install = None
    if _install is not None:
        # The install paths are absolute; their relative position holds
        # wherever the tree now is (a --destdir stage, a moved prefix).
        libdir = os.path.normpath(os.path.join(here, os.path.relpath(_install.LIBDIR, _install.PKGDIR)))
        path = os.path.join(libdir, _install.SONAME)
        if os.path.exists(path):
            return path
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    for build in ("build-release", "build"):
        path = os.path.join(root, build, "src", "libtqvec.so")
        if os.path.exists(path):
            return path
    try:
        ctypes.CDLL(SONAME)  # the dynamic loader's own search: ld.so.cache, LD_LIBRARY_PATH
        return SONAME
    except OSError:
        pass
    found = ctypes.util.find_library("tqvec")
    if found:
        return found
    raise ImportError(SONAME + " not found: install tqvec (meson install or the Debian package), "
                      "build this tree (tools/build), or set TQVEC_LIBRARY")


_lib = ctypes.CDLL(_find_library())


def _fn(name, res, *args):
    f = getattr(_lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


_P = ctypes.c_void_p
_err_p = ctypes.POINTER(_Error)
_open = _fn("tqvec_collection_open", ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Options), ctypes.POINTER(_P),
            _err_p)
_close = _fn("tqvec_collection_close", ctypes.c_int, _P, _err_p)
_add = _fn("tqvec_collection_add", ctypes.c_int, _P, _P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), _err_p)
_remove = _fn("tqvec_collection_remove", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t, _err_p)
_get = _fn("tqvec_collection_get", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t, _P, _P, ctypes.c_size_t,
           ctypes.POINTER(ctypes.c_size_t), _err_p)
_set_attrs = _fn("tqvec_collection_set_attrs", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                 ctypes.c_size_t, _err_p)
# The search path takes plain addresses (precomputed per thread): converting
# an int is the cheapest argument ctypes has.
_search = _fn("tqvec_collection_search", ctypes.c_int, _P, _P, ctypes.c_size_t, _P, _P, _P)
_results_export = _fn("tqvec_results_export", ctypes.c_int, _P, ctypes.c_size_t, _P)
_results_free = _fn("tqvec_results_free", None, _P)
_sync = _fn("tqvec_collection_sync", ctypes.c_int, _P, _err_p)
_compact = _fn("tqvec_collection_compact", ctypes.c_int, _P, _err_p)
_wait_partitioned = _fn("tqvec_collection_wait_partitioned", ctypes.c_int, _P, _err_p)
_verify = _fn("tqvec_collection_verify", ctypes.c_int, _P, _err_p)
_info = _fn("tqvec_collection_get_info", ctypes.c_int, _P, ctypes.POINTER(_Info))
_version = _fn("tqvec_version", ctypes.c_char_p)
_simd_level = _fn("tqvec_simd_level", ctypes.c_char_p)
_errstr = _fn("tqvec_errstr", ctypes.c_char_p, ctypes.c_int)


def version() -> str:
    """The linked library's version, "MAJOR.MINOR.PATCH"."""
    return _version().decode()


def simd_level() -> str:
    """The kernel level in use: "scalar", "avx2" or "avx512"."""
    return _simd_level().decode()


def _raise(rc, err):
    msg = err.message.decode(errors="replace") or _errstr(rc).decode()
    raise _ERRORS.get(rc, TqvecError)(msg, rc)


def _check(rc, err):
    if rc:
        _raise(rc, err)


_METRICS = {"cosine": 3, "l2": 1, "ip": 2}
_REFINES = {"none": 1, "code8": 2, "fp32": 3, "fp16": 4}
_VARIANTS = {"mse": 1, "prod": 2}
_CODEBOOKS = {"scalar": 1, "vector": 2}
_FSYNC = {"always": 1, "everysec": 2, "no": 3}
_NAMES = {"metric": {v: k for k, v in _METRICS.items()}, "refine": {v: k for k, v in _REFINES.items()},
          "variant": {v: k for k, v in _VARIANTS.items()}, "codebook": {v: k for k, v in _CODEBOOKS.items()}}


def _choice(table, value, what):
    if value is None:
        return 0
    try:
        return table[value]
    except KeyError:
        raise ArgumentError("%s must be one of %s, not %r" % (what, ", ".join(table), value)) from None


def _key_bytes(key) -> bytes:
    if isinstance(key, bytes):
        return key
    return str(key).encode()


def _attrs_bytes(attrs) -> bytes:
    if attrs is None:
        return b""
    if isinstance(attrs, bytes):
        return attrs
    if isinstance(attrs, str):
        return attrs.encode()
    return json.dumps(attrs, separators=(",", ":"), ensure_ascii=False).encode()


def _pack_keys(keys):
    """All keys back to back as UTF-8 and their byte lengths. The common
    case (every key a str, all ASCII) is one join and one encode, checked
    by the total length; anything else is encoded key by key."""
    if type(keys) is not list:
        keys = list(keys)
    try:
        blob = "".join(keys).encode()
        lens = np.fromiter(map(len, keys), dtype=np.uintp, count=len(keys))
        if len(blob) == int(lens.sum()):
            return blob, lens
    except TypeError:
        pass
    kb = [_key_bytes(k) for k in keys]
    return b"".join(kb), np.fromiter(map(len, kb), dtype=np.uintp, count=len(kb))


class Match(NamedTuple):
    """One search result: the element's key (str when it is UTF-8), its
    score (cosine similarity, squared l2 distance or inner product) and its
    attributes (parsed JSON, or the raw string if not JSON; None if none)."""

    key: Union[str, bytes]
    score: float
    attrs: Optional[object]


def _decode_key(b: bytes):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b


def _decode_attrs(b: Optional[bytes]):
    if b is None:
        return None
    try:
        return json.loads(b)
    except ValueError:
        return b.decode(errors="replace")


class _Scratch(threading.local):
    """Per-thread buffers for search: a search is a hot path, so nothing
    here is allocated per call once it has grown to fit."""

    def __init__(self):
        self.params = _SearchParams()
        self.params_ref = ctypes.addressof(self.params)
        self.res = _P()
        self.res_ref = ctypes.addressof(self.res)
        self.err = _Error()
        self.err_ref = ctypes.addressof(self.err)
        self.out = _ResultsOut()
        self.out_ref = ctypes.addressof(self.out)
        self.fit(16, 4096, 65536)

    def fit(self, k, key_bytes, attr_bytes):
        o = self.out
        if not hasattr(self, "scores") or len(self.scores) < k:
            self.scores = np.empty(k, dtype=np.float32)
            self.key_lens = np.empty(k, dtype=np.uint32)
            self.attrs_lens = np.empty(k, dtype=np.uint32)
            o.scores, o.key_lens = self.scores.ctypes.data, self.key_lens.ctypes.data
            self.attrs_lens_addr = o.attrs_lens = self.attrs_lens.ctypes.data
        if o.keys_cap < key_bytes:
            self.keys = ctypes.create_string_buffer(key_bytes)
            o.keys, o.keys_cap = ctypes.addressof(self.keys), key_bytes
        if o.attrs_cap < attr_bytes:
            self.attrs = ctypes.create_string_buffer(attr_bytes)
            o.attrs, o.attrs_cap = ctypes.addressof(self.attrs), attr_bytes


_scratch_tls = _Scratch()
_F32 = np.dtype(np.float32)


class Hits:
    """One query's matches, best first, kept as columns (so no Python object
    per match is made unless asked): keys (a list: str when UTF-8, else
    bytes), scores (cosine similarity, squared l2 distance or inner
    product) and attrs (a list of parsed JSON, raw
    strings or None; all None when the search skipped them). Scores are
    a list of floats (np.asarray(hits.scores) for an array). Indexing or
    iterating gives Match tuples."""

    __slots__ = ("keys", "scores", "attrs")

    def __init__(self, keys, scores, attrs):
        self.keys, self.scores, self.attrs = keys, scores, attrs

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        return Match(self.keys[i], self.scores[i], self.attrs[i])

    def __iter__(self):
        return (Match(k, s, a) for k, s, a in zip(self.keys, self.scores, self.attrs))

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return "Hits(%r)" % list(self)


def _keys_of(blob, lens):
    offs = [0]
    offs.extend(itertools.accumulate(lens))
    if blob.isascii():
        text = blob.decode("ascii")  # byte offsets are character offsets
        return [text[a:b] for a, b in zip(offs, offs[1:])]
    return [_decode_key(blob[a:b]) for a, b in zip(offs, offs[1:])]


def _read_matches(res, i, s, with_attrs):
    """Query i's matches, copied out in one call (tqvec_results_export)."""
    o = s.out
    o.attrs_lens = s.attrs_lens_addr if with_attrs else None
    if _results_export(res, i, s.out_ref):
        s.fit(o.count, o.keys_bytes, o.attrs_bytes)
        o.attrs_lens = s.attrs_lens_addr if with_attrs else None
        _results_export(res, i, s.out_ref)
    n = o.count
    if not n:
        return Hits([], [], [])
    keys = _keys_of(ctypes.string_at(o.keys, o.keys_bytes), s.key_lens[:n].tolist())
    scores = s.scores[:n].tolist()
    attrs = [None] * n
    if with_attrs and o.attrs_bytes:
        blob = ctypes.string_at(o.attrs, o.attrs_bytes)
        at = 0
        for j, a in enumerate(s.attrs_lens[:n].tolist()):
            if a != 0xFFFFFFFF:
                attrs[j] = _decode_attrs(blob[at:at + a])
                at += a
    return Hits(keys, scores, attrs)


class Collection:
    """A stored collection (a directory). Open with Collection.open() or
    Collection.create(); close with close() or a with-block. Searches and
    gets may run from several threads at once; adds and removes are
    serialized by the library."""

    def __init__(self, handle, path):
        self._h = handle
        self.path = path
        info = self.info()
        self.dim = info["dim"]
        self.metric = info["metric"]

    # ------------------------------------------------------------ open
    @classmethod
    def open(cls, path, *, create=False, dim=0, metric=None, bits=0, variant=None, refine=None, seed=0,
             fsync=None, segment_rows=0, verify=False, partition_rows=0, merge_factor=0,
             codebook=None) -> "Collection":
        """Open the collection in path. With create=True, create it if the
        directory holds none (dim is then required); giving dim on an
        existing collection checks that the settings match. Sealed segments
        of at least partition_rows rows (0: 4096, None: never) are
        partitioned in the background for searches with nprobe, and merged
        once merge_factor of them are of one size class (0: 4, None:
        never). codebook: "scalar" or "vector" for 1- to 3-bit codes
        (None: the library's default, vector for mse at 1 and 2 bits)."""
        o = _Options()
        o.dim = int(dim)
        o.metric = _choice(_METRICS, metric, "metric")
        o.bits = int(bits)
        o.variant = _choice(_VARIANTS, variant, "variant")
        o.refine = _choice(_REFINES, refine, "refine")
        o.seed = int(seed)
        o.create = int(bool(create))
        o.fsync = _choice(_FSYNC, fsync, "fsync")
        o.segment_rows = int(segment_rows)
        o.verify = int(bool(verify))
        o.partition_rows = 0xFFFFFFFF if partition_rows is None else int(partition_rows)
        o.merge_factor = 0xFFFFFFFF if merge_factor is None else int(merge_factor)
        o.codebook = _choice(_CODEBOOKS, codebook, "codebook")
        h = _P()
        err = _Error()
        _check(_open(os.fsencode(path), ctypes.byref(o), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h, path)

    @classmethod
    def create(cls, path, dim, **settings) -> "Collection":
        """Open path, creating the collection if there is none."""
        return cls.open(path, create=True, dim=dim, **settings)

    def close(self):
        """Sync the log and release the collection; safe to call twice."""
        if self._h:
            err = _Error()
            rc = _close(self._h, ctypes.byref(err))
            self._h = None
            _check(rc, err)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._h:
            raise ArgumentError("the collection is closed")
        return self._h

    # ----------------------------------------------------------- writes
    def add(self, keys: Sequence, vectors, attrs: Optional[Sequence] = None) -> int:
        """Add or replace (same key) len(keys) elements with one log write:
        vectors is an (n, dim) array, attrs None or one entry per key
        (a dict or list is stored as JSON, a str or bytes as is, None for
        none). All or nothing. Returns how many keys were new."""
        h = self._handle()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        n = len(keys)
        if x.ndim != 2 or x.shape[0] != n:
            raise ArgumentError("vectors must be an array of shape (%d, %d), not %s" % (n, self.dim, x.shape))
        if x.shape[1] != self.dim:
            raise DimensionError("vectors have dimension %d, the collection %d" % (x.shape[1], self.dim))
        if attrs is not None and len(attrs) != n:
            raise ArgumentError("%d attributes for %d keys" % (len(attrs), n))
        if n == 0:
            return 0
        key_blob, key_len = _pack_keys(keys)
        table = np.empty(n, dtype=_ELEMENT_DTYPE)
        key_base = ctypes.cast(ctypes.c_char_p(key_blob), ctypes.c_void_p).value or 0
        table["key"] = key_base + np.concatenate(([0], np.cumsum(key_len)[:-1])).astype(np.uintp)
        table["key_len"] = key_len
        table["vector"] = x.ctypes.data + np.arange(n, dtype=np.uintp) * np.uintp(4 * self.dim)
        attr_blob = b""
        if attrs is None:
            table["attrs"] = 0
            table["attrs_len"] = 0
        else:
            ab = [_attrs_bytes(a) for a in attrs]
            attr_blob = b"".join(ab)
            attr_len = np.fromiter(map(len, ab), dtype=np.uintp, count=n)
            attr_base = ctypes.cast(ctypes.c_char_p(attr_blob), ctypes.c_void_p).value or 0
            offs = attr_base + np.concatenate(([0], np.cumsum(attr_len)[:-1])).astype(np.uintp)
            table["attrs"] = np.where(attr_len > 0, offs, 0)
            table["attrs_len"] = attr_len
        added = ctypes.c_size_t()
        err = _Error()
        rc = _add(h, table.ctypes.data, n, ctypes.byref(added), ctypes.byref(err))
        # The blobs and the array must outlive the call.
        del key_blob, attr_blob, x
        _check(rc, err)
        return added.value

    def remove(self, keys: Union[str, bytes, Iterable]) -> int:
        """Remove one key or several; returns how many existed."""
        h = self._handle()
        if isinstance(keys, (str, bytes, int)):
            keys = [keys]
        removed = 0
        err = _Error()
        for k in keys:
            kb = _key_bytes(k)
            rc = _remove(h, kb, len(kb), ctypes.byref(err))
            if rc == NotFoundError.code:
                continue
            _check(rc, err)
            removed += 1
        return removed

    def set_attrs(self, key, attrs) -> None:
        """Replace a key's attributes (None removes them) without touching its vector."""
        kb, ab = _key_bytes(key), _attrs_bytes(attrs)
        err = _Error()
        _check(_set_attrs(self._handle(), kb, len(kb), ab, len(ab), ctypes.byref(err)), err)

    # ------------------------------------------------------------ reads
    def get(self, key, with_vector=True):
        """(vector, attrs) of a key; NotFoundError (a KeyError) if absent.
        The vector is the stored one (normalized under cosine) when refine
        data holds it, else decoded from the codes."""
        h = self._handle()
        kb = _key_bytes(key)
        vec = np.empty(self.dim, dtype=np.float32) if with_vector else None
        need = ctypes.c_size_t()
        err = _Error()
        rc = _get(h, kb, len(kb), vec.ctypes.data if with_vector else None, None, 0, ctypes.byref(need),
                  ctypes.byref(err))
        _check(rc, err)
        attrs = None
        if need.value:
            buf = ctypes.create_string_buffer(need.value)
            _check(_get(h, kb, len(kb), None, buf, need.value, ctypes.byref(need), ctypes.byref(err)), err)
            attrs = _decode_attrs(buf.raw[:need.value])
        return vec, attrs

    def __contains__(self, key) -> bool:
        kb = _key_bytes(key)
        return _get(self._handle(), kb, len(kb), None, None, 0, None, None) == 0

    def search(self, queries, k: int = 10, *, rerank: int = 0, filter: Optional[str] = None,
               threads: int = 0, exact: bool = False, attrs: bool = True, nprobe: int = 0,
               target_recall: float = 0.0):
        """The k best matches of one query (a 1-D array: a Hits) or of each
        row of a 2-D array (a list of Hits), from one snapshot.
        rerank re-scores k*rerank candidates on the refine data; nprobe > 0
        scans only that many partitions of each partitioned segment (0: all
        rows), or target_recall in (0, 1] probes what that recall@10 needs by
        the segments' calibration; filter is
        a Redis vector-set FILTER expression over the JSON attributes;
        exact uses float scoring instead of the 8-bit tables; attrs=False
        leaves Match.attrs None (and skips reading them)."""
        h = self._h
        if not h:
            raise ArgumentError("the collection is closed")
        q = queries if (type(queries) is np.ndarray and queries.dtype is _F32
                        and queries.flags.c_contiguous) else np.ascontiguousarray(queries, dtype=np.float32)
        single = q.ndim == 1
        nq = 1 if single else q.shape[0]
        if q.shape[-1] != self.dim or q.ndim > 2:
            raise DimensionError("queries have dimension %s, the collection %d" % (q.shape[-1:], self.dim))
        # Per-thread scratch: a search is a hot path and these are 300 bytes.
        s = _scratch_tls
        p = s.params
        p.k = k
        p.rerank = rerank
        p.scorer = 2 if exact else 0
        p.threads = threads
        p.nprobe = nprobe
        p.target_recall = target_recall
        p.filter = filter.encode() if isinstance(filter, str) else filter
        try:  # the cheapest way to an array's address, when it is writable
            addr = ctypes.addressof(ctypes.c_char.from_buffer(q))
        except (TypeError, ValueError):
            addr = q.ctypes.data
        rc = _search(h, addr, nq, s.params_ref, s.res_ref, s.err_ref)
        if rc:
            _raise(rc, s.err)
        res = s.res.value
        if len(s.scores) < k:
            s.fit(k, 0, 0)
        try:
            if single:
                return _read_matches(res, 0, s, attrs)
            return [_read_matches(res, i, s, attrs) for i in range(nq)]
        finally:
            _results_free(res)

    # ------------------------------------------------------ maintenance
    def sync(self):
        """fdatasync the log now, whatever the fsync policy."""
        err = _Error()
        _check(_sync(self._handle(), ctypes.byref(err)), err)

    def compact(self):
        """Seal the log into a segment and rewrite segments with many deletions."""
        err = _Error()
        _check(_compact(self._handle(), ctypes.byref(err)), err)

    def wait_partitioned(self):
        """Return once the background partitioner has partitioned every
        sealed segment that wants it (for benchmarks and tests)."""
        err = _Error()
        _check(_wait_partitioned(self._handle(), ctypes.byref(err)), err)

    def verify(self):
        """Checksum every byte; CorruptError names the file and section."""
        err = _Error()
        _check(_verify(self._handle(), ctypes.byref(err)), err)

    def info(self) -> dict:
        i = _Info()
        _info(self._handle(), ctypes.byref(i))
        return {"dim": i.dim, "metric": _NAMES["metric"].get(i.metric, "cosine"), "bits": i.bits,
                "variant": _NAMES["variant"].get(i.variant, "mse"), "refine": _NAMES["refine"].get(i.refine, "none"),
                "count": i.count, "deleted": i.deleted, "segments": i.segments, "unsealed": i.unsealed,
                "log_bytes": i.log_bytes, "bytes_per_vector": i.bytes_per_vector + i.refine_bytes_per_vector,
                "simd": i.simd.decode() if i.simd else "", "codebook": _NAMES["codebook"].get(i.codebook, "scalar")}

    def count(self) -> int:
        """Live elements."""
        return self.info()["count"]

    def __len__(self):
        return self.count()
