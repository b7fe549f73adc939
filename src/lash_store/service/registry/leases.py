"""Process leases inside write transactions (reference §a.6, with the fixes of §7 item 5).

Every lease operation locks the process row first and reads the clock after
the lock (the database clock on PostgreSQL), so an instant is measured from
the moment the lock was granted.  A lease is *live* while its owner and token
are set and it expires strictly later than now.

* claim: unknown -> :class:`UnknownProcess`; terminal -> :class:`ProcessAlreadyTerminal` (nothing to run);
  live and another owner's -> :class:`ProcessAlreadyLeased`; live and the caller's -> the same lease,
  extended (a re-claim never invalidates the token the owner holds); otherwise a new token and the next
  fencing token (the counter survives releases);
* renew: the stored lease must be live with the caller's owner, token *and* fencing token, else
  :class:`LeaseLost` ("missing or expired");
* complete: releases the lease if the token matches, keeps the fencing counter; anything else is a no-op.
"""

from __future__ import annotations

import secrets

import msgspec

from lash_store.core.registry import rows
from lash_store.core.validate import saturating_add
from lash_store.errors import LeaseLost, ProcessAlreadyLeased, ProcessAlreadyTerminal
from lash_store.processes import ProcessLease, ProcessLeaseCompletion
from lash_store.service.ports import Tx
from lash_store.service.registry.events import key, locked_process


def claim(tx: Tx, process_id: str, owner_id: str, ttl_ms: int) -> ProcessLease:
    process, (found,) = locked_process(tx, process_id, ("lease_row", key(process_id)))
    if process.is_terminal:
        raise ProcessAlreadyTerminal(process_id, process.status)
    now = tx.now_ms()
    current = rows.lease_row(found[0] if found else None)
    expires = saturating_add(now, ttl_ms)
    if current is not None and current.live(now):
        if current.lease_owner_id != owner_id:
            raise ProcessAlreadyLeased(process_id, current.lease_owner_id or "", current.expires_at_ms)
        held = rows.lease(process_id, current)
        tx.send("extend_lease", {"process_id": process_id, "lease_token": held.lease_token, "expires_at_ms": expires})
        return msgspec.structs.replace(held, expires_at_epoch_ms=expires)
    lease = ProcessLease(
        process_id=process_id,
        owner_id=owner_id,
        lease_token=secrets.token_hex(32),
        fencing_token=(0 if current is None else current.fencing_token) + 1,
        claimed_at_epoch_ms=now,
        expires_at_epoch_ms=expires,
    )
    tx.send(
        "put_lease",
        {
            "process_id": process_id,
            "owner_id": owner_id,
            "lease_token": lease.lease_token,
            "fencing_token": lease.fencing_token,
            "claimed_at_ms": now,
            "expires_at_ms": expires,
        },
    )
    return lease


def renew(tx: Tx, lease: ProcessLease, ttl_ms: int) -> ProcessLease:
    tx.send("lock_process", key(lease.process_id))
    (found,) = tx.fetch_many([("lease_row", key(lease.process_id))])
    now = tx.now_ms()
    current = rows.lease_row(found[0] if found else None)
    if current is None or not current.holds(lease, now):
        raise LeaseLost(lease.process_id, lease.owner_id, lease.fencing_token)
    expires = saturating_add(now, ttl_ms)
    tx.send(
        "extend_lease", {"process_id": lease.process_id, "lease_token": lease.lease_token, "expires_at_ms": expires}
    )
    return msgspec.structs.replace(lease, expires_at_epoch_ms=expires)


def complete(tx: Tx, completion: ProcessLeaseCompletion) -> None:
    tx.send("lock_process", key(completion.process_id))
    tx.send("release_lease", {"process_id": completion.process_id, "lease_token": completion.lease_token})
