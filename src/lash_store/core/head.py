"""The head row every backend keeps per session.

The row exists from a store's creation on (a missing row is damage); its
``session_id`` stays ``None`` until the first commit binds the store.  The
graph counters and the usage ledger live on it, so a commit rewrites one row.
"""

from __future__ import annotations

from typing import Any

import msgspec


class HeadRow(msgspec.Struct, frozen=True):
    """The committed head (``None`` fields before the first commit) with its counters and ledger."""

    session_id: str | None
    head_revision: int
    checkpoint_ref: str | None
    leaf_node_id: str | None
    body: bytes | None
    usage_ledger: bytes | None
    node_count: int
    user_message_count: int

    @property
    def bound(self) -> bool:
        """Whether a commit has bound this store to a session (there is a head to read)."""
        return self.session_id is not None

    def params(self) -> dict[str, Any]:
        """The row as ``write_head`` parameters."""
        return {field: getattr(self, field) for field in self.__struct_fields__}
