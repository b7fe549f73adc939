"""What an OpenAI Agents SDK item is, as the SDK's ``AdvancedSQLiteSession`` indexes it: its type and tool name.

``AdvancedSQLiteSession`` files every item under a message type and a tool
name when it is written, and answers ``get_conversation_by_turns`` and
``get_tool_usage`` from those columns.  ``LashSession`` stores only the item,
so it derives both from the item when it reads: the rules below are the
observable behaviour of the SDK's session (0.24.0), re-stated, so that the
answers are equal item for item (``tests/test_openai_branching.py`` and
``tests/test_differential.py`` compare them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["ToolUse", "item_type", "tool_name", "tool_usage"]

# Item types the SDK counts as tool calls in ``get_tool_usage``.
TOOL_CALL_TYPES = frozenset(
    {
        "tool_call",
        "function_call",
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "tool_search_call",
        "custom_tool_call",
        "mcp_call",
        "mcp_approval_request",
        "shell_call",
        "apply_patch_call",
    }
)
# Hosted tools whose items carry no name: the type names the tool.
_NAMED_BY_TYPE = frozenset(
    {
        "computer_call",
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "shell_call",
        "apply_patch_call",
    }
)
_TOOL_SEARCH = frozenset({"tool_search_call", "tool_search_output"})
_MCP = frozenset({"mcp_call", "mcp_approval_request"})

ToolUse = tuple[str | None, int, int]  # (tool name, calls, user turn), as the SDK returns it


def item_type(item: Any) -> str:
    """``user`` or ``assistant`` by role, else the item's ``type``, else ``other``."""
    if isinstance(item, dict):
        role = item.get("role")
        if role == "user" or role == "assistant":
            return str(role)
        kind = item.get("type")
        if kind:
            return str(kind)
    return "other"


def tool_name(item: Any) -> str | None:
    """The tool an item names: ``server.tool`` for MCP, the type for hosted tools, ``namespace.name`` otherwise."""
    if not isinstance(item, dict):
        return None
    raw = item.get("type")
    kind = raw if isinstance(raw, str) else None  # an odd (unhashable) type names no tool
    if kind in _MCP and "server_label" in item:
        label, name = item.get("server_label"), item.get("name")
        if name and label:
            return f"{label}.{name}"
        if label or name:
            return str(label or name)
        return None
    if kind in _TOOL_SEARCH:
        return "tool_search"
    if kind in _NAMED_BY_TYPE:
        return str(kind)
    if "name" not in item or item["name"] is None:
        return None
    name = str(item["name"])
    namespace = item.get("namespace")
    space = None if namespace is None else str(namespace)
    # A namespace equal to the name is the SDK's reserved shape for a deferred top-level tool: the bare name.
    if name and space and space != name:
        return f"{space}.{name}"
    return name


def tool_usage(turns: Iterable[tuple[int, Any]]) -> list[ToolUse]:
    """``get_tool_usage`` of a branch, from its ``(user turn, item)`` pairs in order.

    Calls are counted per (tool, turn).  A ``tool_search_output`` counts only in
    a turn without a ``tool_search_call`` (the call already stands for it).
    Ordered by turn, then tool name with ``None`` first (the SDK's SQL sorts so).
    """
    counts: dict[tuple[int, str | None], int] = {}
    orphan_outputs: dict[int, int] = {}
    searched: set[int] = set()
    for turn, item in turns:
        kind = item_type(item)
        if kind in TOOL_CALL_TYPES:
            name = tool_name(item)
            counts[turn, name] = counts.get((turn, name), 0) + 1
            if kind == "tool_search_call":
                searched.add(turn)
        elif kind == "tool_search_output":
            orphan_outputs[turn] = orphan_outputs.get(turn, 0) + 1
    for turn, outputs in orphan_outputs.items():
        if turn not in searched:
            counts[turn, "tool_search"] = counts.get((turn, "tool_search"), 0) + outputs
    ordered = sorted(counts.items(), key=lambda pair: (pair[0][0], pair[0][1] is not None, pair[0][1] or ""))
    return [(name, count, turn) for (turn, name), count in ordered]
