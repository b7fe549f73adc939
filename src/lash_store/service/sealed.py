"""Encryption at rest for every backend: a :class:`~lash_store.service.ports.Backend` that seals what it stores.

The services talk to their backend through named queries whose parameters and
row columns are the same on every backend (``ports``).  :class:`SealedBackend`
wraps a backend and its transactions: before a query runs, the parameters that
hold conversation bytes are sealed (AES-GCM, :mod:`lash_store.core.crypto`) and
the values SQL compares (blob refs, node tags) are turned into keyed
addresses; after it runs, the columns are opened again.  The services, the
SQL of each backend and the in-memory reference never see the difference, so
encryption is written once, here, for SQLite and PostgreSQL alike.

The table below lists, per query name, which parameters and columns are sealed
and what row each sealed value is bound to (its AES-GCM associated data).
Queries not listed touch no sealed column (locks, counters, deletes by id).
Every new query that reads or writes a sealed column must be added here:
``tests/test_encryption.py`` scans every column of an encrypted store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from lash_store.core import crypto
from lash_store.core.crypto import Cipher
from lash_store.errors import CorruptData, InvalidInput
from lash_store.options import KeyRing
from lash_store.service.ports import Backend, Params, Row, Tx

T = TypeVar("T")

# Kinds: the column a sealed value belongs in (part of its associated data).
HEAD = b"head-body"
LEDGER = b"usage-ledger"
NODE = b"node-body"
USER_TEXT = b"node-user-text"
BLOB = b"blob-content"
STAGED = b"staged-write"
TURN = b"turn-commit"
BATCH = b"queue-payloads"
QUEUE_ERROR = b"queue-error"  # a failed attempt's error text (it may quote the conversation)
URI = b"attachment-uri"
META_NAME = b"meta-session-name"
META_MODEL = b"meta-model"
META_CWD = b"meta-cwd"
META_RELATION = b"meta-relation"
# Address kinds: every column holding a blob ref shares one (SQL joins them); tags have their own.
REF = b"blob-ref"
TAG = b"node-tag"

Key = Callable[[Params], str]
ParamOp = Callable[[Cipher, Params, dict[str, Any]], None]
RowOp = Callable[[Cipher, Params, list[Any]], None]


def _none(_: Params) -> str:
    return ""


def _p(name: str) -> Key:
    return lambda p: str(p[name])


def _staged_key(p: Params) -> str:
    return f"{p['anchor_id']}\x00{p['task_id']}\x00{p['idx']}"


def _turn_key(p: Params) -> str:
    return f"{p['session_id']}\x00{p['turn_id']}"


# -- parameter operations ----------------------------------------------------


def seal(name: str, kind: bytes, key: Key) -> ParamOp:
    def op(c: Cipher, p: Params, out: dict[str, Any]) -> None:
        value = p.get(name)
        if value is not None:
            out[name] = c.seal(kind, key(p), value)

    return op


def seal_text(name: str, kind: bytes, key: Key) -> ParamOp:
    def op(c: Cipher, p: Params, out: dict[str, Any]) -> None:
        out[name] = c.seal_text(kind, key(p), p.get(name))

    return op


def address(name: str, kind: bytes = REF) -> ParamOp:
    def op(c: Cipher, p: Params, out: dict[str, Any]) -> None:
        value = p.get(name)
        if value is not None:
            out[name] = c.address(kind, value)

    return op


def addresses(name: str, kind: bytes = REF) -> ParamOp:
    def op(c: Cipher, p: Params, out: dict[str, Any]) -> None:
        values = p.get(name)
        if values is not None:
            out[name] = [c.address(kind, value) for value in values]

    return op


# -- column operations (addresses first: row keys are computed from opened columns) --------------


def unaddress(col: int, kind: bytes = REF) -> RowOp:
    def op(c: Cipher, p: Params, row: list[Any]) -> None:
        row[col] = c.unaddress("stored address", kind, row[col])

    return op


def opened(
    col: int, kind: bytes, what: str, key: Callable[[Params, list[Any]], str], *, damaged: bytes | None = None
) -> RowOp:
    """Open a sealed column.  ``damaged``: what a damaged value (not sealed, cut short) reads as instead of
    failing the whole query, so that the service can pass over that one row and name it (queue rows); a value
    that does not authenticate under its key still fails the query, typed, naming the key."""

    def op(c: Cipher, p: Params, row: list[Any]) -> None:
        row_key = key(p, row)
        try:
            row[col] = c.open(f"{what} {row_key!r}" if row_key else what, kind, row_key, row[col])
        except CorruptData:
            if damaged is None:
                raise
            row[col] = damaged

    return op


def opened_text(col: int, kind: bytes, what: str, key: Callable[[Params, list[Any]], str]) -> RowOp:
    def op(c: Cipher, p: Params, row: list[Any]) -> None:
        row_key = key(p, row)
        row[col] = c.open_text(f"{what} {row_key!r}" if row_key else what, kind, row_key, row[col])

    return op


def _col(index: int) -> Callable[[Params, list[Any]], str]:
    return lambda p, row: str(row[index])


def _param(name: str) -> Callable[[Params, list[Any]], str]:
    return lambda p, row: str(p[name])


def _no_key(p: Params, row: list[Any]) -> str:
    return ""


def _staged_cols(p: Params, row: list[Any]) -> str:
    return f"{row[0]}\x00{row[1]}\x00{row[2]}"


def _turn_cols(p: Params, row: list[Any]) -> str:
    return f"{row[0]}\x00{row[1]}"


_NODE_PARAMS: list[ParamOp] = [
    seal("body", NODE, _p("node_id")),
    seal_text("user_text", USER_TEXT, _none),
]
_STAGED_PARAMS: list[ParamOp] = [seal("value", STAGED, _staged_key)]
_BLOB_PARAMS: list[ParamOp] = [seal("content", BLOB, _p("hash")), address("hash")]
_META_PARAMS: list[ParamOp] = [
    seal_text("session_name", META_NAME, _none),
    seal_text("model", META_MODEL, _none),
    seal_text("cwd", META_CWD, _none),
    seal("relation", META_RELATION, _none),
]
# A damaged batch row reads as bytes msgpack never starts with: the queue passes over it and names it.
_BATCH_ROW: list[RowOp] = [opened(9, BATCH, "queued-work batch", _col(1), damaged=b"\xc1")]
_DEAD_LETTER_ROW: list[RowOp] = [*_BATCH_ROW, opened_text(14, QUEUE_ERROR, "dead letter error", _col(1))]
_STAGED_ROW: list[RowOp] = [opened(5, STAGED, "staged write", _staged_cols)]

PARAMS: dict[str, list[ParamOp]] = {
    "write_head": [seal("body", HEAD, _none), seal("usage_ledger", LEDGER, _none), address("checkpoint_ref")],
    "upsert_node": _NODE_PARAMS,
    "insert_node_row": _NODE_PARAMS,
    "insert_node_tag": [address("tag", TAG)],
    "insert_node_ref": [address("ref")],
    "query_nodes": [addresses("tags", TAG)],
    "reachable_refs": [addresses("roots")],
    "put_staged_write": _STAGED_PARAMS,
    "replace_staged_write": _STAGED_PARAMS,
    "insert_staged_write_row": _STAGED_PARAMS,
    "record_turn_commit": [seal("record", TURN, _turn_key)],
    "put_blob": _BLOB_PARAMS,
    "insert_blob_row": _BLOB_PARAMS,
    "get_blob": [address("hash")],
    "get_blobs": [addresses("refs")],
    "blob_rows": [addresses("refs")],
    "blob_edge_rows": [addresses("refs")],
    "sweep_blobs": [addresses("live")],
    "sweep_candidates": [addresses("live")],
    "put_blob_edge": [address("parent_ref"), address("child_ref")],
    "save_meta": _META_PARAMS,
    "record_intent": [seal_text("canonical_uri", URI, _p("attachment_id"))],
    "insert_attachment_row": [seal_text("canonical_uri", URI, _p("attachment_id"))],
    "pin_module": [address("blob_ref")],
    "insert_batch": [seal("payloads", BATCH, _p("batch_id"))],
    "insert_batch_row": [seal("payloads", BATCH, _p("batch_id")), seal_text("last_error", QUEUE_ERROR, _p("batch_id"))],
    "release_batch": [seal_text("error", QUEUE_ERROR, _p("batch_id"))],
}

ROWS: dict[str, list[RowOp]] = {
    "read_head": [
        unaddress(2),
        opened(4, HEAD, "session head", _no_key),
        opened(5, LEDGER, "usage ledger", _no_key),
    ],
    # A commit uses neither the head body nor the checkpoint ref: they stay sealed (never returned to a caller).
    "commit_head": [opened(5, LEDGER, "usage ledger", _no_key)],
    "full_graph": [opened(1, NODE, "node", _col(0))],
    "active_path": [opened(2, NODE, "node", _col(0))],
    "load_node": [opened(0, NODE, "node", _param("node_id"))],
    "query_nodes": [opened(1, NODE, "node", _col(0))],
    "node_rows": [opened(4, NODE, "node", _col(0)), opened_text(3, USER_TEXT, "user text", _no_key)],
    "first_user_text": [opened_text(0, USER_TEXT, "first user message", _no_key)],
    "reachable_refs": [unaddress(0)],
    "node_tag_rows": [unaddress(1, TAG)],
    "node_ref_rows": [unaddress(1)],
    "load_staged_writes": _STAGED_ROW,
    "staged_write_rows": _STAGED_ROW,
    "find_turn_commit": [opened(0, TURN, "turn commit", lambda p, row: _turn_key(p))],
    "turn_commit_rows": [opened(2, TURN, "turn commit", _turn_cols)],
    "get_blob": [opened(1, BLOB, "blob", _param("hash"))],
    "get_blobs": [unaddress(0), opened(2, BLOB, "blob", _col(0))],
    "blob_rows": [unaddress(0), opened(5, BLOB, "blob", _col(0))],
    "all_blob_rows": [unaddress(0), opened(5, BLOB, "blob", _col(0))],
    "blob_sizes": [unaddress(0)],
    "blob_edge_rows": [unaddress(0), unaddress(1)],
    "load_meta": [
        opened_text(1, META_NAME, "session name", _no_key),
        opened_text(3, META_MODEL, "session model", _no_key),
        opened_text(4, META_CWD, "session cwd", _no_key),
        opened(5, META_RELATION, "session meta relation", _no_key),
    ],
    "list_uncommitted": [opened_text(2, URI, "attachment", _col(0))],
    "attachment_rows": [opened_text(2, URI, "attachment", _col(0))],
    "module_blob_ref": [unaddress(0)],
    "module_rows": [unaddress(1)],
    "batch_by_source_key": _BATCH_ROW,
    "insert_batch": _BATCH_ROW,
    "ready_batches": _BATCH_ROW,
    "free_batch": _BATCH_ROW,
    "batch_by_id": _BATCH_ROW,
    "list_batches": _BATCH_ROW,
    "list_pending_batches": _BATCH_ROW,
    "batch_rows": [*_BATCH_ROW, opened_text(20, QUEUE_ERROR, "queued-work error", _col(1))],
    "dead_letters": _DEAD_LETTER_ROW,
    "dead_letter_by_id": _DEAD_LETTER_ROW,
}

# PostgreSQL's factory lists many sessions in one query: each row is opened in its own partition.
_PICKER_ROW = [
    opened_text(1, META_CWD, "session cwd", _no_key),
    opened(2, META_RELATION, "session meta relation", _no_key),
    opened_text(3, USER_TEXT, "first user message", _no_key),
]
SCOPED_ROWS: dict[str, tuple[int, list[RowOp]]] = {
    "list_sessions": (5, _PICKER_ROW),
    "recent_sessions": (5, _PICKER_ROW),
}


class SealedTx:
    """A backend transaction whose sealed parameters and columns are sealed and opened on the way."""

    __slots__ = ("_cipher", "_tx")

    def __init__(self, tx: Tx, cipher: Cipher) -> None:
        self._tx = tx
        self._cipher = cipher

    def __getattr__(self, name: str) -> Any:  # backend-specific helpers (never a query)
        return getattr(self._tx, name)

    def now_ms(self) -> int:
        return self._tx.now_ms()

    def _params(self, query: str, params: Params | None) -> Params | None:
        ops = PARAMS.get(query)
        if ops is None or params is None:
            return params
        out = dict(params)
        for op in ops:
            op(self._cipher, params, out)
        return out

    def _row(self, query: str, params: Params | None, row: Row | None) -> Row | None:
        if row is None:
            return None
        ops = ROWS.get(query)
        cipher = self._cipher
        if ops is None:
            scoped = SCOPED_ROWS.get(query)
            if scoped is None:
                return row
            col, ops = scoped
            cipher = cipher.for_scope(str(row[col]))
        values = list(row)
        p = params or {}
        for op in ops:
            op(cipher, p, values)
        return tuple(values)

    def one(self, query: str, params: Params | None = None) -> Row | None:
        return self._row(query, params, self._tx.one(query, self._params(query, params)))

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        rows = self._tx.all(query, self._params(query, params))
        if query not in ROWS and query not in SCOPED_ROWS:
            return rows
        return [self._row(query, params, row) for row in rows]  # type: ignore[misc]

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        rows = self._tx.iter(query, self._params(query, params))
        if query not in ROWS and query not in SCOPED_ROWS:
            return rows
        return (self._row(query, params, row) for row in rows)  # type: ignore[misc]

    def run(self, query: str, params: Params | None = None) -> int:
        return self._tx.run(query, self._params(query, params))

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        if query not in PARAMS:
            return self._tx.run_many(query, rows)
        return self._tx.run_many(query, [self._params(query, p) or {} for p in rows])

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        results = self._tx.fetch_many([(query, self._params(query, params)) for query, params in reads])
        return [
            [self._row(query, params, row) for row in rows]  # type: ignore[misc]
            if query in ROWS or query in SCOPED_ROWS
            else rows
            for (query, params), rows in zip(reads, results, strict=True)
        ]

    def send(self, query: str, params: Params | None = None) -> None:
        self._tx.send(query, self._params(query, params))

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        if query not in PARAMS:
            self._tx.send_many(query, rows)
        else:
            self._tx.send_many(query, [self._params(query, p) or {} for p in rows])


class SealedBackend:
    """A backend whose stored conversation is sealed under a key ring (see the module docstring).

    A store written in plaintext (its head was bound by a commit whose body is
    not sealed) keeps working with a key ring: it stays plaintext, every value
    passes as it is.  A new (unbound) or encrypted store is sealed, and a value
    in it that is not sealed is :class:`~lash_store.errors.CorruptData`.
    """

    def __init__(self, inner: Backend, cipher: Cipher, *, probe: bool = True) -> None:
        self.inner = inner
        self.cipher = cipher
        self._sealing: bool | None = None if probe else True

    def __getattr__(self, name: str) -> Any:  # describe(), compact(), backend-specific attributes
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def in_memory(self) -> bool:
        return self.inner.in_memory

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def close(self) -> None:
        self.inner.close()

    def sealing(self) -> bool:
        """Whether this store seals (``False``: a plaintext store opened with a key ring)."""
        if self._sealing is None:
            head = self.inner.read(lambda tx: tx.one("read_head"))
            if head is None or head[0] is None:
                return True  # not bound yet: decide again at the next call (another writer may bind it)
            self._sealing = head[4] is None or crypto.is_sealed(head[4])
        return self._sealing

    def read(self, body: Callable[[Tx], T]) -> T:
        if not self.sealing():
            return self.inner.read(body)
        cipher = self.cipher
        return self.inner.read(lambda tx: body(SealedTx(tx, cipher)))

    def write(self, body: Callable[[Tx], T]) -> T:
        if not self.sealing():
            return self.inner.write(body)
        cipher = self.cipher
        return self.inner.write(lambda tx: body(SealedTx(tx, cipher)))

    def raw_read(self, body: Callable[[Tx], T]) -> T:
        """A transaction on the stored values as they are (``rekey``)."""
        return self.inner.read(body)

    def raw_write(self, body: Callable[[Tx], T]) -> T:
        return self.inner.write(body)


def sealed_backend(backend: Backend, ring: KeyRing) -> Backend:
    """``backend`` sealing under ``ring`` (bound to its PostgreSQL partition, if it has one)."""
    scope = getattr(backend, "sid", "")
    return SealedBackend(backend, Cipher(ring, scope if isinstance(scope, str) else ""))


# ---------------------------------------------------------------------------
# rekey: every value re-sealed under the ring's current key, in bounded batches


class _Column(NamedTuple):
    col: int  # in the page query's row
    param: str  # in the update query (the old value is ``old_<param>``)
    kind: bytes
    key: Callable[[Row], str]  # the row key the value is bound to
    what: str


class _Table(NamedTuple):
    name: str
    single: bool  # one row per store (head, metadata): one page, no cursor
    columns: tuple[_Column, ...]
    keys: Callable[[Row], dict[str, Any]]  # the update's row identity


def _c(index: int) -> Callable[[Row], str]:
    return lambda row: str(row[index])


def _blank(row: Row) -> str:
    return ""


_TABLES: tuple[_Table, ...] = (
    _Table(
        "head",
        True,
        (_Column(1, "body", HEAD, _blank, "session head"), _Column(2, "usage_ledger", LEDGER, _blank, "usage ledger")),
        lambda row: {"head_revision": row[0]},
    ),
    _Table(
        "meta",
        True,
        (
            _Column(0, "session_name", META_NAME, _blank, "session name"),
            _Column(1, "model", META_MODEL, _blank, "session model"),
            _Column(2, "cwd", META_CWD, _blank, "session cwd"),
            _Column(3, "relation", META_RELATION, _blank, "session meta relation"),
        ),
        lambda row: {},
    ),
    _Table(
        "nodes",
        False,
        (
            _Column(1, "user_text", USER_TEXT, _blank, "user text"),
            _Column(2, "body", NODE, _c(0), "node"),
        ),
        lambda row: {"node_id": row[0]},
    ),
    _Table("blobs", False, (_Column(1, "content", BLOB, _c(0), "blob"),), lambda row: {"hash": row[0]}),
    _Table(
        "staged",
        False,
        (_Column(4, "value", STAGED, lambda row: f"{row[1]}\x00{row[2]}\x00{row[3]}", "staged write"),),
        lambda row: {"anchor_id": row[1], "task_id": row[2], "idx": row[3]},
    ),
    _Table(
        "turns",
        False,
        (_Column(3, "record", TURN, lambda row: f"{row[1]}\x00{row[2]}", "turn commit"),),
        lambda row: {"session_id": row[1], "turn_id": row[2]},
    ),
    _Table(
        "batches",
        False,
        (
            _Column(1, "payloads", BATCH, _c(0), "queued-work batch"),
            _Column(2, "last_error", QUEUE_ERROR, _c(0), "queued-work error"),
        ),
        lambda row: {"batch_id": row[0]},
    ),
    _Table(
        "attachments",
        False,
        (_Column(1, "canonical_uri", URI, _c(0), "attachment"),),
        lambda row: {"attachment_id": row[0]},
    ),
)


def _address_key(cipher: Cipher, table: str, row: Row) -> Row:
    """Blob rows are bound to their public ref, which the page query returns as its keyed address."""
    if table != "blobs":
        return row
    return (cipher.unaddress("stored address", REF, row[0]), *row[1:])


def rekey(backend: Backend, *, batch_size: int = 500) -> Any:
    """Re-seal every stored value not sealed under the ring's current key (see ``SessionService.rekey``)."""
    from lash_store.model import RekeyReport

    if not isinstance(backend, SealedBackend):
        raise InvalidInput("options.encryption", "rekey needs a key ring in the options")
    if backend.name not in ("sqlite", "postgres"):
        raise InvalidInput("store", f"rekey runs on SQLite and PostgreSQL stores, not on {backend.name!r}")
    if not backend.sealing():
        raise InvalidInput(
            "store", "this store was written in plaintext; copy it into a new encrypted store (lash-store copy)"
        )
    cipher = backend.cipher
    resealed: dict[str, int] = {}
    scanned = 0
    for table in _TABLES:
        after: str | None = None if table.single else ""
        done = 0
        while True:
            params = {"after": after, "limit": batch_size}

            def page(tx: Tx, params: dict[str, Any] = params, table: _Table = table) -> tuple[list[Row], int]:
                rows = tx.all(f"rekey_{table.name}", params)
                changed = 0
                for stored in rows:
                    keyed = _address_key(cipher, table.name, stored)
                    update: dict[str, Any] = {}
                    for column in table.columns:
                        value = stored[column.col]
                        row_key = column.key(keyed)
                        what = f"{column.what} {row_key!r}" if row_key else column.what
                        new = cipher.reseal(what, column.kind, row_key, value)
                        update[column.param] = value if new is None else new
                        update[f"old_{column.param}"] = value
                        if new is not None:
                            update["_changed"] = True
                    if update.pop("_changed", False):
                        update.update(table.keys(stored))
                        changed += tx.run(f"rekey_{table.name}_update", update)
                return rows, changed

            rows, changed = backend.raw_write(page)
            scanned += len(rows)
            done += changed
            if table.single or len(rows) < batch_size:
                break
            after = str(rows[-1][0])
        resealed[table.name] = done
    left = backend.raw_read(_stale_key_ids(cipher.key_id))
    return RekeyReport(key_id=cipher.key_id, resealed=resealed, scanned=scanned, remaining_key_ids=sorted(left))


def _stale_key_ids(current: str) -> Callable[[Tx], set[str]]:
    """The key ids other than ``current`` found on any stored value (a full scan, page by page)."""

    def body(tx: Tx) -> set[str]:
        found: set[str] = set()
        for table in _TABLES:
            after: str | None = None if table.single else ""
            while True:
                rows = tx.all(f"rekey_{table.name}", {"after": after, "limit": 1000})
                for row in rows:
                    for column in table.columns:
                        key_id = crypto.key_id_of(row[column.col])
                        if key_id is not None and key_id != current:
                            found.add(key_id)
                if table.single or len(rows) < 1000:
                    break
                after = str(rows[-1][0])
        return found

    return body
