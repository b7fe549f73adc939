"""Graph node encoding, the picker's view of a node, and the cycle-guarded active-path walk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core.validate import check_id, check_instance, check_list, check_ms, check_optional_id, check_text
from lash_store.errors import InvalidInput
from lash_store.model import SessionNode


class EncodedNode(msgspec.Struct, frozen=True):
    """A node ready to insert; ``user_text`` is set only for user messages (picker info)."""

    node_id: str
    parent_node_id: str | None
    body: bytes
    user_text: str | None


def encode_nodes(what: str, nodes: Any) -> list[EncodedNode]:
    """Validate and encode the nodes of one delta; an id may appear only once."""
    seen: set[str] = set()
    encoded = []
    for index, node in enumerate(check_list(what, nodes)):
        item = f"{what}[{index}]"
        check_instance(item, node, SessionNode)
        check_id(f"{item}.node_id", node.node_id)
        check_optional_id(f"{item}.parent_node_id", node.parent_node_id)
        check_text(f"{item}.kind", node.kind)
        check_optional_id(f"{item}.agent_frame_id", node.agent_frame_id)
        if node.timestamp_ms is not None:
            check_ms(f"{item}.timestamp_ms", node.timestamp_ms)
        if node.node_id in seen:
            raise InvalidInput(f"{item}.node_id", f"node id {node.node_id!r} appears twice in one delta")
        seen.add(node.node_id)
        body = codec.encode(item, node)  # every typed field was checked above; payload and caused_by are opaque
        encoded.append(EncodedNode(node.node_id, node.parent_node_id, body, user_message_text(node)))
    return encoded


def decode_node(node_id: str, body: bytes) -> SessionNode:
    return codec.decode(f"graph node {node_id!r}", body, SessionNode)


_SKIPPED_PARTS = frozenset({"tool_call", "tool_result"})


def user_message_text(node: SessionNode) -> str | None:
    """The picker text of a user message node, or ``None`` for any other node.

    Text-bearing parts are joined by a blank line, images render as
    ``[Image attached]``, tool calls and results are skipped, blank parts dropped.
    A NUL character becomes U+FFFD (the payload itself keeps it).
    """
    payload = node.payload
    if node.kind != "message" or not isinstance(payload, dict) or payload.get("role") != "user":
        return None
    pieces = []
    parts = payload.get("parts")
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in _SKIPPED_PARTS:
            continue
        if kind == "image":
            pieces.append("[Image attached]")
            continue
        text = part.get("text")
        if isinstance(text, str) and text.strip():
            pieces.append(text)
    # The picker text is a text column; PostgreSQL text holds no NUL, so it reads as U+FFFD there.
    return "\n\n".join(pieces).strip().replace("\x00", "\ufffd")


def walk_active_path(leaf_node_id: str, rows: Iterable[tuple[str, str | None, bytes]]) -> list[SessionNode]:
    """Order the rows of an upward walk root-first, stopping at the first repeated id (a cycle)."""
    path: list[SessionNode] = []
    seen: set[str] = set()
    for node_id, _parent, body in rows:
        if node_id in seen:
            break
        seen.add(node_id)
        path.append(decode_node(node_id, body))
    path.reverse()
    return path
