"""Encryption at rest: sealing stored values under a key ring, and keyed addresses.

Everything here uses ``cryptography`` (the ``lash-store[encryption]`` extra):
AES-256-GCM for values, AES-SIV (RFC 5297) for addresses, HKDF-SHA256 to
derive sub-keys.  Nothing is home-made but the framing.

Sealed bytes (node bodies, head bodies, blob contents, queue payloads, turn
records, staged writes, the usage ledger, the metadata relation)::

    C1 | version 01 | len(key id) | key id | nonce (12) | AES-GCM ciphertext + tag (16)

0xC1 is the one byte msgpack never uses, so a sealed value can never be taken
for a plaintext record.  The associated data is the header, the value's kind
(which column it belongs in), the session partition and the row's key (node
id, blob address, batch id, ...): a value moved to another column, row or
session does not open.  Sealed text (the first user message, metadata names,
attachment URIs) is ``lse1:<key id>:<base64 of nonce + ciphertext>``.  The key
id is stored in the clear: it names the key (``rekey`` finds rows sealed under
an old one by it), it is not secret.

Addresses (blob hashes, blob references, node tags, the checkpoint ref) must
stay comparable in SQL, so they are sealed deterministically: AES-SIV under a
key derived from the ring's *index key* (never rotated), with the kind and
session partition as associated data.  Equal plaintexts give equal addresses
inside one session only; nobody without the index key can confirm a guess by
hashing it, and two rings (or two PostgreSQL sessions) never show the same
address for the same content.  The service sees the public refs (SHA-256 of
the content) unchanged: :class:`Cipher.unaddress` turns an address back.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Any

from lash_store.errors import CorruptData, EncryptionKeyMismatch, EncryptionKeyMissing
from lash_store.options import KeyRing

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

MAGIC = 0xC1
VERSION = 1
TEXT_PREFIX = "lse1:"
ADDRESS_PREFIX = "~"  # never the first character of a SHA-256 hex ref or of a tag's canonical JSON
_NONCE = 12
_INFO = b"lash-store/v1/"


def is_sealed(stored: Any) -> bool:
    """Whether a stored value is sealed bytes or sealed text (``False`` for plaintext and ``None``)."""
    if isinstance(stored, (bytes, bytearray, memoryview)):
        return len(stored) > 3 and stored[0] == MAGIC
    if isinstance(stored, str):
        return stored.startswith(TEXT_PREFIX)
    return False


def looks_sealed(stored: Any) -> bool:
    """Whether ``stored`` has the full shape of a sealed value (version, a key id, room for nonce and tag)."""
    if isinstance(stored, (bytes, bytearray, memoryview)):
        data = bytes(stored[:70])
        if len(data) < 4 or data[0] != MAGIC or data[1] != VERSION or not 1 <= data[2] <= 64:
            return False
        kid = data[3 : 3 + data[2]]
        return len(stored) >= 3 + len(kid) + _NONCE + 16 and kid.isascii() and kid.decode("ascii").isprintable()
    if isinstance(stored, str):
        return stored.startswith(TEXT_PREFIX) and ":" in stored[len(TEXT_PREFIX) :]
    return False


def key_id_of(stored: Any) -> str | None:
    """The key id a sealed value records (``None``: the value is not sealed)."""
    if isinstance(stored, (bytes, bytearray, memoryview)):
        data = bytes(stored[:259])
        if len(data) > 3 and data[0] == MAGIC:
            return data[3 : 3 + data[2]].decode("ascii", "replace")
        return None
    if isinstance(stored, str) and stored.startswith(TEXT_PREFIX):
        return stored[len(TEXT_PREFIX) :].partition(":")[0]
    return None


def header(key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    return bytes([MAGIC, VERSION, len(kid)]) + kid


def _derive(key: bytes, info: bytes, length: int = 32) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_INFO + info).derive(key)


class Cipher:
    """A key ring, bound to one session partition (``scope``: the PostgreSQL session id, ``""`` for a file)."""

    def __init__(self, ring: KeyRing, scope: str = "", *, strict: bool = True) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

        self._invalid_tag = InvalidTag
        self._aesgcm = AESGCM
        self.ring = ring
        self.scope = scope
        # strict: a value that is not sealed is damage (or a downgrade), never data.  Lenient only where one
        # read spans stores that may be plaintext (the PostgreSQL factory's listing of every session).
        self.strict = strict
        self._scope = scope.encode("utf-8")
        self.key_id = ring.current
        self._keys: dict[str, AESGCM] = {}
        self._header = header(ring.current)
        seal_key = self._key(ring.current)
        assert seal_key is not None
        self._seal_key: AESGCM = seal_key
        self._text_prefix = f"{TEXT_PREFIX}{ring.current}:"
        self._siv: AESSIV = AESSIV(_derive(ring.index_key, b"address", 64))
        self._addresses: dict[tuple[bytes, str], str] = {}
        self._values: dict[tuple[bytes, str], str] = {}  # the reverse of _addresses
        self._seal_prefixes: dict[bytes, bytes] = {}

    def for_scope(self, scope: str) -> Cipher:
        """The same ring bound to another partition (the PostgreSQL factory reads many sessions)."""
        return self if scope == self.scope else Cipher(self.ring, scope, strict=self.strict)

    def _key(self, key_id: str) -> AESGCM | None:
        key = self._keys.get(key_id)
        if key is None:
            material = self.ring.keys.get(key_id)
            if material is None:
                return None
            key = self._keys[key_id] = self._aesgcm(_derive(material, b"data-key/" + key_id.encode("ascii")))
        return key

    def _aad(self, head: bytes, kind: bytes, row: str) -> bytes:
        return b"\x00".join((head, kind, self._scope, row.encode("utf-8")))

    # -- values (AES-GCM) ------------------------------------------------

    def seal(self, kind: bytes, row: str, data: bytes) -> bytes:
        prefix = self._seal_prefixes.get(kind)
        if prefix is None:  # the associated data up to the row key, made once per kind
            prefix = self._seal_prefixes[kind] = self._aad(self._header, kind, "")
        nonce = os.urandom(_NONCE)
        return self._header + nonce + self._seal_key.encrypt(nonce, data, prefix + row.encode("utf-8"))

    def open(self, what: str, kind: bytes, row: str, stored: Any) -> Any:
        """The plaintext of a sealed value (``None`` stays ``None``)."""
        if stored is None:
            return None
        if isinstance(stored, memoryview):
            stored = bytes(stored)
        if type(stored) is not bytes or len(stored) < 4 or stored[0] != MAGIC:
            return self._plain(what, stored)
        if stored[1] != VERSION:
            raise CorruptData(what, f"sealed with an unknown format version {stored[1]}")
        end = 3 + stored[2]
        return self._open(what, kind, row, stored[:end], stored[end:])

    def _open(self, what: str, kind: bytes, row: str, head: bytes, rest: bytes) -> bytes:
        try:
            key_id = head[3:].decode("ascii")
        except UnicodeDecodeError as exc:
            raise CorruptData(what, "sealed value names an unreadable key id") from exc
        key = self._key(key_id)
        if key is None:
            raise EncryptionKeyMissing(key_id, what)
        if len(rest) < _NONCE + 16:
            raise CorruptData(what, "sealed value is truncated")
        try:
            return key.decrypt(rest[:_NONCE], rest[_NONCE:], self._aad(head, kind, row))
        except self._invalid_tag as exc:
            raise EncryptionKeyMismatch(key_id, what) from exc

    def seal_text(self, kind: bytes, row: str, text: str | None) -> str | None:
        if text is None:
            return None
        sealed = self.seal(kind, row, text.encode("utf-8"))
        return self._text_prefix + base64.b64encode(sealed[len(self._header) :]).decode("ascii")

    def _plain(self, what: str, stored: Any) -> Any:
        if self.strict:
            raise CorruptData(what, "stored value is not sealed, but this store is encrypted")
        return stored

    def open_text(self, what: str, kind: bytes, row: str, stored: Any) -> Any:
        if stored is None:
            return None
        if type(stored) is not str or not stored.startswith(TEXT_PREFIX):
            return self._plain(what, stored)
        key_id, colon, encoded = stored[len(TEXT_PREFIX) :].partition(":")
        try:
            if not colon or not key_id or not key_id.isascii() or len(key_id) > 64:
                raise ValueError("no key id")
            rest = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CorruptData(what, f"stored text is not a sealed value ({exc})") from exc
        opened = self._open(what, kind, row, header(key_id), rest)
        try:
            return opened.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptData(what, "sealed text is not UTF-8") from exc

    def reseal(self, what: str, kind: bytes, row: str, stored: Any) -> Any:
        """``stored`` sealed under the current key (``rekey``); ``None`` if it already is or is ``None``."""
        if stored is None:
            return None
        if isinstance(stored, memoryview):
            stored = bytes(stored)
        if key_id_of(stored) == self.key_id:
            return None
        if isinstance(stored, str):
            return self.seal_text(kind, row, self.open_text(what, kind, row, stored))
        return self.seal(kind, row, self.open(what, kind, row, stored))

    # -- addresses (AES-SIV) ---------------------------------------------

    def address(self, kind: bytes, value: str) -> str:
        """The stored form of a value SQL compares (a blob ref, a tag): deterministic, keyed, reversible."""
        memo = (kind, value)
        found = self._addresses.get(memo)
        if found is None:
            raw = value.encode("utf-8")
            if len(value) == 64:
                try:  # a SHA-256 hex ref packs into 32 bytes (flag byte 1)
                    raw = b"\x01" + bytes.fromhex(value)
                    if raw[1:].hex() != value:
                        raise ValueError(value)
                except ValueError:
                    raw = b"\x00" + value.encode("utf-8")
            else:
                raw = b"\x00" + raw
            sealed = self._siv.encrypt(raw, [kind + b"\x00" + self._scope])
            found = ADDRESS_PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
            self._remember(memo, found, (kind, found), value)
        return found

    def _remember(self, memo: tuple[bytes, str], address: str, reverse: tuple[bytes, str], value: str) -> None:
        if len(self._addresses) >= 8192:  # small memos: a commit re-addresses the same few refs
            self._addresses.clear()
            self._values.clear()
        self._addresses[memo] = address
        self._values[reverse] = value

    def unaddress(self, what: str, kind: bytes, stored: Any) -> Any:
        """The value an address stands for (``None`` stays ``None``)."""
        if stored is None:
            return None
        if type(stored) is not str or not stored.startswith(ADDRESS_PREFIX):
            return self._plain(what, stored)
        known = self._values.get((kind, stored))
        if known is not None:
            return known
        value = self._unaddress(what, kind, stored)
        self._remember((kind, value), stored, (kind, stored), value)
        return value

    def _unaddress(self, what: str, kind: bytes, stored: str) -> str:
        try:
            sealed = base64.urlsafe_b64decode(stored[1:] + "=" * (-(len(stored) - 1) % 4))
            raw = self._siv.decrypt(sealed, [kind + b"\x00" + self._scope])
        except (ValueError, binascii.Error) as exc:
            raise CorruptData(what, f"stored address is not an address ({exc})") from exc
        except self._invalid_tag as exc:
            raise EncryptionKeyMismatch("index", what) from exc
        if raw[:1] == b"\x01":
            return raw[1:].hex()
        try:
            return raw[1:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptData(what, "stored address is not UTF-8") from exc
