"""GC marking: which blobs are live.  Backends sweep everything else, set-based, in SQL.

Roots are the head checkpoint manifest and its snapshot children, the
execution-state refs named by agent frames, and pinned module artifacts
(the backend's sweep adds those with a sub-select).  If the head or the
rooted manifest exists but does not decode, marking refuses: the GC must then
delete nothing, because it can no longer prove what is live.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from lash_store.core import codec
from lash_store.core.checkpoint import decode_manifest
from lash_store.core.head import HeadRow
from lash_store.errors import CorruptData


class Marking(msgspec.Struct, frozen=True):
    """Live refs found from the head, or the reason marking refused."""

    live: frozenset[str] = frozenset()
    skipped_reason: str | None = None


def mark_live(read_head: Callable[[], HeadRow], load_blob: Callable[[str], bytes | None]) -> Marking:
    """Collect the head's live refs; ``load_blob`` returns a blob's raw content or ``None``.

    The head is read through ``read_head`` so that a head row that cannot even
    be read counts as undecodable, like one whose body does not decode.
    """
    try:
        head = read_head()
    except CorruptData as exc:
        return Marking(skipped_reason=f"head does not decode ({exc.detail}); nothing deleted")
    if not head.bound or head.body is None:
        return Marking()
    try:
        body = codec.decode("session head", head.body, codec.HeadBody)
    except CorruptData as exc:
        return Marking(skipped_reason=f"head does not decode ({exc.detail}); nothing deleted")
    live = set(codec.frame_execution_refs(body.agent_frames))
    ref = head.checkpoint_ref
    if ref is not None:
        live.add(ref)
        try:
            content = load_blob(ref)
            if content is not None:
                live.update(decode_manifest(ref, content).child_refs())
        except CorruptData as exc:
            return Marking(skipped_reason=f"rooted manifest {ref} does not decode ({exc.detail}); nothing deleted")
    return Marking(live=frozenset(live))
