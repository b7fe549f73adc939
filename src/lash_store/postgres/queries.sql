-- Every SQL statement of the PostgreSQL backend, by name (see lash_store.core.queries).
-- ``{schema}`` is the configured schema; ``%(sid)s`` is the session partition the store is bound to
-- (added to every query's parameters by the backend).  Rows have the same columns, in the same
-- order, as the SQLite backend's queries of the same name.  A list parameter arrives as a text[].
-- Transactions run under READ COMMITTED and lock first: every statement after a lock_* query sees
-- everything committed before the lock was granted.  Transactions run in pipeline mode; the queries in
-- backend.DEFERRED (locks, and the plain writes of a commit) are sent without waiting for their results,
-- so no service may read their row counts (tests/test_postgres_pipeline.py checks).

-- ===== locks ==============================================================

-- name: lock_session
SELECT 1 FROM {schema}.sessions WHERE session_id = %(sid)s FOR NO KEY UPDATE

-- The queue's lock row is created on first use; inserting it never blocks on an existing row.  (Not a no-op
-- upsert: that would write a new row version on every lock, and a replayed turn must write nothing.)
-- name: lock_queue
INSERT INTO {schema}.queue_state (session_id, queue_session_id) VALUES (%(sid)s, %(session_id)s)
ON CONFLICT DO NOTHING;
SELECT 1 FROM {schema}.queue_state WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s
FOR NO KEY UPDATE

-- The database clock, read after the locks were granted (never inside a statement that waits).
-- name: now
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint

-- ===== partitions (the factory) ===========================================

-- name: ensure_session
INSERT INTO {schema}.sessions (session_id, created_at_ms, updated_at_ms)
VALUES (%(sid)s, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
ON CONFLICT DO NOTHING

-- name: server_version
SELECT current_setting('server_version')

-- name: schema_version
SELECT version FROM {schema}.schema_version

-- name: session_exists
SELECT 1 FROM {schema}.sessions WHERE session_id = %(sid)s

-- Every row of the sessions named, except their queued batches (see delete_queued_batches).
-- name: delete_sessions
DELETE FROM {schema}.graph_nodes WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.blobs WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.turn_commits WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.queue_state WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.queue_counters WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.attachment_manifest WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.artifact_refs WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.node_tags WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.node_blob_refs WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.blob_edges WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.staged_writes WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.session_meta WHERE session_id = ANY(%(sids)s);
DELETE FROM {schema}.sessions WHERE session_id = ANY(%(sids)s)

-- name: delete_queued_batches
DELETE FROM {schema}.queued_work_batches WHERE session_id = ANY(%(sids)s)

-- Retention: sessions whose last commit (or creation) is older than the horizon by the database clock and
-- that hold no queued work.  Locked rows are in use by a commit right now: skipped, never waited for.
-- name: idle_sessions
SELECT s.session_id FROM {schema}.sessions s
WHERE s.updated_at_ms < floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - %(idle_ms)s
  AND s.session_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.queued_work_batches q WHERE q.session_id = s.session_id)
ORDER BY s.session_id LIMIT %(limit)s

-- name: lock_idle_sessions
SELECT s.session_id FROM {schema}.sessions s
WHERE s.updated_at_ms < floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - %(idle_ms)s
  AND s.session_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.queued_work_batches q WHERE q.session_id = s.session_id)
ORDER BY s.session_id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- Keyset pagination by session id: stable while sessions are created and deleted.  The bound is
-- repeated on both sides of the join: with it on session_meta only, a merge join scans sessions
-- from its first row, and a page far into the listing costs as much as every page before it.
-- name: list_sessions
SELECT m.meta_session_id, m.cwd, m.relation,
       (SELECT g.user_text FROM {schema}.graph_nodes g
        WHERE g.session_id = m.session_id AND g.user_text IS NOT NULL AND NOT g.tombstoned
        ORDER BY g.seq LIMIT 1),
       s.user_message_count, m.session_id
FROM {schema}.session_meta m JOIN {schema}.sessions s ON s.session_id = m.session_id
WHERE m.session_id > %(after)s AND s.session_id > %(after)s
ORDER BY m.session_id
LIMIT %(limit)s

-- Most recently committed first; keyset on (updated_at_ms, session_id), both descending.  The page is
-- picked from the narrow sessions table first (a top-N sort, no index to maintain on every commit), then
-- only its rows are joined to their metadata and first user message.
-- name: recent_sessions
WITH page AS (
    SELECT s.session_id, s.updated_at_ms, s.user_message_count FROM {schema}.sessions s
    WHERE (s.updated_at_ms, s.session_id) < (%(before_ms)s, %(before_id)s)
    ORDER BY s.updated_at_ms DESC, s.session_id DESC
    LIMIT %(limit)s
)
SELECT m.meta_session_id, m.cwd, m.relation,
       (SELECT g.user_text FROM {schema}.graph_nodes g
        WHERE g.session_id = m.session_id AND g.user_text IS NOT NULL AND NOT g.tombstoned
        ORDER BY g.seq LIMIT 1),
       p.user_message_count, m.session_id, p.updated_at_ms
FROM page p JOIN {schema}.session_meta m ON m.session_id = p.session_id
ORDER BY p.updated_at_ms DESC, p.session_id DESC

-- ===== head ===============================================================

-- name: read_head
SELECT bound_session_id, head_revision, checkpoint_ref, leaf_node_id, body, usage_ledger, node_count,
       user_message_count
FROM {schema}.sessions WHERE session_id = %(sid)s

-- The head as a commit reads it (the same row; an encrypted store leaves the body it does not use sealed).
-- name: commit_head
SELECT bound_session_id, head_revision, checkpoint_ref, leaf_node_id, body, usage_ledger, node_count,
       user_message_count
FROM {schema}.sessions WHERE session_id = %(sid)s

-- name: write_head
UPDATE {schema}.sessions
SET bound_session_id = %(session_id)s, head_revision = %(head_revision)s, checkpoint_ref = %(checkpoint_ref)s,
    leaf_node_id = %(leaf_node_id)s, body = %(body)s, usage_ledger = %(usage_ledger)s,
    node_count = %(node_count)s, user_message_count = %(user_message_count)s,
    updated_at_ms = floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
WHERE session_id = %(sid)s

-- name: write_counts
UPDATE {schema}.sessions SET node_count = %(node_count)s, user_message_count = %(user_message_count)s
WHERE session_id = %(sid)s

-- name: clear_leaf
UPDATE {schema}.sessions SET leaf_node_id = NULL WHERE session_id = %(sid)s

-- ===== graph ==============================================================

-- name: full_graph
SELECT node_id, body FROM {schema}.graph_nodes WHERE session_id = %(sid)s AND NOT tombstoned ORDER BY seq

-- Walk from a leaf to the root; the depth cap (live node count) turns a parent cycle into a finite walk.
-- name: active_path
WITH RECURSIVE path(node_id, parent_node_id, body, depth) AS (
    SELECT node_id, parent_node_id, body, 0 FROM {schema}.graph_nodes
    WHERE session_id = %(sid)s AND node_id = %(leaf_node_id)s AND NOT tombstoned
    UNION ALL
    SELECT g.node_id, g.parent_node_id, g.body, p.depth + 1
    FROM path p JOIN {schema}.graph_nodes g ON g.session_id = %(sid)s AND g.node_id = p.parent_node_id
    WHERE NOT g.tombstoned AND p.depth < %(depth_cap)s
)
SELECT node_id, parent_node_id, body FROM path ORDER BY depth

-- name: node_tombstoned
SELECT tombstoned FROM {schema}.graph_nodes WHERE session_id = %(sid)s AND node_id = %(node_id)s

-- name: load_node
SELECT body FROM {schema}.graph_nodes WHERE session_id = %(sid)s AND node_id = %(node_id)s AND NOT tombstoned

-- name: nodes_state
SELECT node_id, tombstoned, user_text IS NOT NULL FROM {schema}.graph_nodes
WHERE session_id = %(sid)s AND node_id = ANY(%(node_ids)s::text[])

-- name: upsert_node
INSERT INTO {schema}.graph_nodes (session_id, node_id, parent_node_id, user_text, body, kind, lane, sort_key)
VALUES (%(sid)s, %(node_id)s, %(parent_node_id)s, %(user_text)s, %(body)s, %(kind)s, %(lane)s, %(sort_key)s)
ON CONFLICT (session_id, node_id) DO UPDATE SET parent_node_id = EXCLUDED.parent_node_id,
    user_text = EXCLUDED.user_text, body = EXCLUDED.body, tombstoned = false, kind = EXCLUDED.kind,
    lane = EXCLUDED.lane, sort_key = EXCLUDED.sort_key

-- name: delete_graph
DELETE FROM {schema}.node_tags WHERE session_id = %(sid)s;
DELETE FROM {schema}.node_blob_refs WHERE session_id = %(sid)s;
DELETE FROM {schema}.graph_nodes WHERE session_id = %(sid)s

-- ===== node index (tags, blob refs, queries) ==============================

-- name: delete_node_index
DELETE FROM {schema}.node_tags WHERE session_id = %(sid)s AND node_id = ANY(%(node_ids)s::text[]);
DELETE FROM {schema}.node_blob_refs WHERE session_id = %(sid)s AND node_id = ANY(%(node_ids)s::text[])

-- name: insert_node_tag
INSERT INTO {schema}.node_tags (session_id, node_id, tag) VALUES (%(sid)s, %(node_id)s, %(tag)s)
ON CONFLICT DO NOTHING

-- name: insert_node_ref
INSERT INTO {schema}.node_blob_refs (session_id, node_id, ref) VALUES (%(sid)s, %(node_id)s, %(ref)s)
ON CONFLICT DO NOTHING

-- name: delete_tombstoned_index
DELETE FROM {schema}.node_tags t USING {schema}.graph_nodes g
WHERE t.session_id = %(sid)s AND g.session_id = %(sid)s AND g.node_id = t.node_id AND g.tombstoned;
DELETE FROM {schema}.node_blob_refs r USING {schema}.graph_nodes g
WHERE r.session_id = %(sid)s AND g.session_id = %(sid)s AND g.node_id = r.node_id AND g.tombstoned;
DELETE FROM {schema}.staged_writes w USING {schema}.graph_nodes g
WHERE w.session_id = %(sid)s AND g.session_id = %(sid)s AND g.node_id = w.anchor_id AND g.tombstoned

-- name: query_nodes
SELECT g.node_id, g.body FROM {schema}.graph_nodes g
WHERE g.session_id = %(sid)s AND NOT g.tombstoned
  AND (%(kind)s::text IS NULL OR g.kind = %(kind)s::text)
  AND (%(any_lane)s::boolean OR g.lane = %(lane)s::text)
  AND (%(sort_before)s::text IS NULL OR g.sort_key < %(sort_before)s::text)
  AND (%(sort_key)s::text IS NULL OR g.sort_key = %(sort_key)s::text)
  AND (%(tag_count)s::bigint = 0 OR (SELECT count(*) FROM {schema}.node_tags t
       WHERE t.session_id = %(sid)s AND t.node_id = g.node_id AND t.tag = ANY(%(tags)s::text[])) = %(tag_count)s::bigint)
ORDER BY g.sort_key DESC NULLS LAST, g.seq DESC
LIMIT %(limit)s::bigint

-- name: reachable_refs
WITH RECURSIVE reach(ref) AS (
    SELECT unnest(%(roots)s::text[])
    UNION
    SELECT r.ref FROM {schema}.node_blob_refs r JOIN {schema}.graph_nodes g
        ON g.session_id = %(sid)s AND g.node_id = r.node_id
    WHERE r.session_id = %(sid)s AND NOT g.tombstoned
    UNION
    SELECT e.child_ref FROM {schema}.blob_edges e JOIN reach ON e.parent_ref = reach.ref
    WHERE e.session_id = %(sid)s
)
SELECT ref FROM reach

-- name: node_tag_rows
SELECT node_id, tag FROM {schema}.node_tags WHERE session_id = %(sid)s ORDER BY node_id, tag

-- name: node_ref_rows
SELECT node_id, ref FROM {schema}.node_blob_refs WHERE session_id = %(sid)s ORDER BY node_id, ref

-- ===== staged writes ======================================================

-- name: put_staged_write
INSERT INTO {schema}.staged_writes (session_id, anchor_id, task_id, idx, task_path, channel, value)
VALUES (%(sid)s, %(anchor_id)s, %(task_id)s, %(idx)s, %(task_path)s, %(channel)s, %(value)s)
ON CONFLICT (session_id, anchor_id, task_id, idx) DO NOTHING

-- name: replace_staged_write
INSERT INTO {schema}.staged_writes (session_id, anchor_id, task_id, idx, task_path, channel, value)
VALUES (%(sid)s, %(anchor_id)s, %(task_id)s, %(idx)s, %(task_path)s, %(channel)s, %(value)s)
ON CONFLICT (session_id, anchor_id, task_id, idx) DO UPDATE SET task_path = EXCLUDED.task_path,
    channel = EXCLUDED.channel, value = EXCLUDED.value

-- name: load_staged_writes
SELECT anchor_id, task_id, idx, task_path, channel, value FROM {schema}.staged_writes
WHERE session_id = %(sid)s AND anchor_id = ANY(%(anchor_ids)s::text[])
  AND (%(any_channel)s::boolean OR channel = ANY(%(channels)s::text[]))
ORDER BY seq

-- name: delete_staged_writes
DELETE FROM {schema}.staged_writes WHERE session_id = %(sid)s AND anchor_id = ANY(%(anchor_ids)s::text[])

-- name: staged_write_rows
SELECT anchor_id, task_id, idx, task_path, channel, value FROM {schema}.staged_writes
WHERE session_id = %(sid)s ORDER BY seq

-- name: insert_staged_write_row
INSERT INTO {schema}.staged_writes (session_id, anchor_id, task_id, idx, task_path, channel, value)
VALUES (%(sid)s, %(anchor_id)s, %(task_id)s, %(idx)s, %(task_path)s, %(channel)s, %(value)s)

-- name: tombstone_node
UPDATE {schema}.graph_nodes SET tombstoned = true
WHERE session_id = %(sid)s AND node_id = %(node_id)s AND NOT tombstoned

-- name: delete_tombstoned
DELETE FROM {schema}.graph_nodes WHERE session_id = %(sid)s AND tombstoned

-- name: first_user_text
SELECT user_text FROM {schema}.graph_nodes
WHERE session_id = %(sid)s AND user_text IS NOT NULL AND NOT tombstoned ORDER BY seq LIMIT 1

-- name: node_rows
SELECT node_id, parent_node_id, tombstoned, user_text, body FROM {schema}.graph_nodes
WHERE session_id = %(sid)s ORDER BY seq

-- name: insert_node_row
INSERT INTO {schema}.graph_nodes (session_id, node_id, parent_node_id, tombstoned, user_text, body, kind, lane,
    sort_key)
VALUES (%(sid)s, %(node_id)s, %(parent_node_id)s, %(tombstoned)s, %(user_text)s, %(body)s, %(kind)s, %(lane)s,
    %(sort_key)s)

-- ===== turn commits =======================================================

-- name: find_turn_commit
SELECT record FROM {schema}.turn_commits
WHERE session_id = %(sid)s AND stamp_session_id = %(session_id)s AND turn_id = %(turn_id)s

-- name: record_turn_commit
INSERT INTO {schema}.turn_commits (session_id, stamp_session_id, turn_id, record, committed_at_ms)
VALUES (%(sid)s, %(session_id)s, %(turn_id)s, %(record)s, %(committed_at_ms)s)

-- name: turn_commit_rows
SELECT stamp_session_id, turn_id, record, committed_at_ms FROM {schema}.turn_commits
WHERE session_id = %(sid)s ORDER BY committed_at_ms, stamp_session_id, turn_id

-- name: count_old_turn_commits
SELECT count(*) FROM {schema}.turn_commits WHERE session_id = %(sid)s AND committed_at_ms < %(cutoff_ms)s

-- name: delete_old_turn_commits
DELETE FROM {schema}.turn_commits WHERE session_id = %(sid)s AND committed_at_ms < %(cutoff_ms)s

-- ===== blobs ==============================================================

-- A re-put keeps the first writer's bytes and refreshes the GC grace clock.  The row lock this
-- takes makes a concurrent sweep re-check the refreshed row and keep it.
-- name: put_blob
INSERT INTO {schema}.blobs (session_id, hash, encoding, kind, raw_size, created_at_ms, content)
VALUES (%(sid)s, %(hash)s, %(encoding)s, %(kind)s, %(raw_size)s, %(created_at_ms)s, %(content)s)
ON CONFLICT (session_id, hash) DO UPDATE
SET created_at_ms = GREATEST({schema}.blobs.created_at_ms, EXCLUDED.created_at_ms)

-- name: get_blob
SELECT encoding, content, raw_size FROM {schema}.blobs WHERE session_id = %(sid)s AND hash = %(hash)s

-- name: get_blobs
SELECT hash, encoding, content, raw_size FROM {schema}.blobs WHERE session_id = %(sid)s AND hash = ANY(%(refs)s::text[])

-- name: count_blobs
SELECT count(*) FROM {schema}.blobs WHERE session_id = %(sid)s

-- name: sweep_blobs
DELETE FROM {schema}.blobs b
WHERE b.session_id = %(sid)s AND b.created_at_ms <= %(cutoff_ms)s AND b.hash <> ALL(%(live)s::text[])
  AND NOT EXISTS (SELECT 1 FROM {schema}.artifact_refs a WHERE a.session_id = %(sid)s AND a.blob_ref = b.hash)

-- name: sweep_edges
DELETE FROM {schema}.blob_edges e
WHERE e.session_id = %(sid)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.blobs b WHERE b.session_id = %(sid)s AND b.hash = e.parent_ref)

-- name: sweep_candidates
SELECT count(*), coalesce(sum(octet_length(b.content)), 0) FROM {schema}.blobs b
WHERE b.session_id = %(sid)s AND b.created_at_ms <= %(cutoff_ms)s AND b.hash <> ALL(%(live)s::text[])
  AND NOT EXISTS (SELECT 1 FROM {schema}.artifact_refs a WHERE a.session_id = %(sid)s AND a.blob_ref = b.hash)

-- name: blob_rows
SELECT hash, encoding, kind, raw_size, created_at_ms, content FROM {schema}.blobs b
WHERE b.session_id = %(sid)s AND (b.hash = ANY(%(refs)s::text[])
    OR EXISTS (SELECT 1 FROM {schema}.artifact_refs a WHERE a.session_id = %(sid)s AND a.blob_ref = b.hash))
ORDER BY created_at_ms, hash

-- name: blob_sizes
SELECT hash, encoding, kind, raw_size, created_at_ms, octet_length(content) FROM {schema}.blobs
WHERE session_id = %(sid)s ORDER BY created_at_ms, hash

-- name: all_blob_rows
SELECT hash, encoding, kind, raw_size, created_at_ms, content FROM {schema}.blobs
WHERE session_id = %(sid)s ORDER BY created_at_ms, hash

-- name: put_blob_edge
INSERT INTO {schema}.blob_edges (session_id, parent_ref, child_ref) VALUES (%(sid)s, %(parent_ref)s, %(child_ref)s)
ON CONFLICT DO NOTHING

-- name: blob_edge_rows
SELECT parent_ref, child_ref FROM {schema}.blob_edges
WHERE session_id = %(sid)s AND (%(all_edges)s::boolean OR parent_ref = ANY(%(refs)s::text[]))
ORDER BY parent_ref, child_ref

-- name: insert_blob_row
INSERT INTO {schema}.blobs (session_id, hash, encoding, kind, raw_size, created_at_ms, content)
VALUES (%(sid)s, %(hash)s, %(encoding)s, %(kind)s, %(raw_size)s, %(created_at_ms)s, %(content)s)
ON CONFLICT (session_id, hash) DO UPDATE
SET created_at_ms = GREATEST({schema}.blobs.created_at_ms, EXCLUDED.created_at_ms)

-- ===== metadata ===========================================================

-- name: save_meta
INSERT INTO {schema}.session_meta (session_id, meta_session_id, session_name, created_at, model, cwd, relation)
VALUES (%(sid)s, %(session_id)s, %(session_name)s, %(created_at)s, %(model)s, %(cwd)s, %(relation)s)
ON CONFLICT (session_id) DO UPDATE SET meta_session_id = EXCLUDED.meta_session_id,
    session_name = EXCLUDED.session_name, created_at = EXCLUDED.created_at, model = EXCLUDED.model,
    cwd = EXCLUDED.cwd, relation = EXCLUDED.relation

-- name: load_meta
SELECT meta_session_id, session_name, created_at, model, cwd, relation FROM {schema}.session_meta
WHERE session_id = %(sid)s

-- ===== attachments ========================================================

-- Re-recording an uncommitted intent refreshes it; a committed row never changes.
-- name: record_intent
INSERT INTO {schema}.attachment_manifest
    (session_id, attachment_id, intent_session_id, canonical_uri, intent_at_ms, committed_at_ms)
VALUES (%(sid)s, %(attachment_id)s, %(session_id)s, %(canonical_uri)s, %(intent_at_ms)s, NULL)
ON CONFLICT (session_id, attachment_id) DO UPDATE SET intent_session_id = EXCLUDED.intent_session_id,
    canonical_uri = EXCLUDED.canonical_uri,
    intent_at_ms = GREATEST({schema}.attachment_manifest.intent_at_ms, EXCLUDED.intent_at_ms)
WHERE {schema}.attachment_manifest.committed_at_ms IS NULL

-- First commit wins: only rows of this session that are still uncommitted are stamped.
-- name: stamp_attachment
UPDATE {schema}.attachment_manifest SET committed_at_ms = %(committed_at_ms)s
WHERE session_id = %(sid)s AND attachment_id = %(attachment_id)s AND intent_session_id = %(session_id)s
  AND committed_at_ms IS NULL

-- name: list_uncommitted
SELECT attachment_id, intent_session_id, canonical_uri, intent_at_ms FROM {schema}.attachment_manifest
WHERE session_id = %(sid)s AND committed_at_ms IS NULL AND intent_at_ms <= %(older_than_ms)s
ORDER BY intent_at_ms, attachment_id

-- name: forget_attachment
DELETE FROM {schema}.attachment_manifest WHERE session_id = %(sid)s AND attachment_id = %(attachment_id)s

-- name: attachment_rows
SELECT attachment_id, intent_session_id, canonical_uri, intent_at_ms, committed_at_ms
FROM {schema}.attachment_manifest WHERE session_id = %(sid)s ORDER BY attachment_id

-- name: insert_attachment_row
INSERT INTO {schema}.attachment_manifest
    (session_id, attachment_id, intent_session_id, canonical_uri, intent_at_ms, committed_at_ms)
VALUES (%(sid)s, %(attachment_id)s, %(session_id)s, %(canonical_uri)s, %(intent_at_ms)s, %(committed_at_ms)s)

-- ===== module artifacts ===================================================

-- name: pin_module
INSERT INTO {schema}.artifact_refs (session_id, artifact_ref, blob_ref) VALUES (%(sid)s, %(module_ref)s, %(blob_ref)s)
ON CONFLICT (session_id, artifact_ref) DO UPDATE SET blob_ref = EXCLUDED.blob_ref

-- name: module_blob_ref
SELECT blob_ref FROM {schema}.artifact_refs WHERE session_id = %(sid)s AND artifact_ref = %(module_ref)s

-- name: unpin_module
DELETE FROM {schema}.artifact_refs WHERE session_id = %(sid)s AND artifact_ref = %(module_ref)s

-- name: count_modules
SELECT count(*) FROM {schema}.artifact_refs WHERE session_id = %(sid)s

-- name: module_rows
SELECT artifact_ref, blob_ref FROM {schema}.artifact_refs WHERE session_id = %(sid)s ORDER BY artifact_ref

-- ===== work queue =========================================================
-- Batch rows are selected as: enqueue_seq, batch_id, queue session id, source_key, delivery_policy,
-- slot_policy, merge_key, available_at_ms, enqueued_at_ms, payloads  (lash_store.core.queue.BatchRow)
-- A row with dead_at_ms set is a dead letter: no longer queued work (see PoisonPolicy).  It keeps its
-- source key, so a producer retrying the enqueue gets it back instead of a new copy of the poison.

-- name: batch_by_source_key
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND source_key = %(source_key)s

-- name: insert_batch
WITH seq AS (
    INSERT INTO {schema}.queue_counters (session_id, last_enqueue_seq) VALUES (%(sid)s, 1)
    ON CONFLICT (session_id) DO UPDATE SET last_enqueue_seq = {schema}.queue_counters.last_enqueue_seq + 1
    RETURNING last_enqueue_seq
)
INSERT INTO {schema}.queued_work_batches (session_id, batch_id, enqueue_seq, queue_session_id, source_key,
    delivery_policy, slot_policy, merge_key, available_at_ms, enqueued_at_ms, payloads)
SELECT %(sid)s, %(batch_id)s, seq.last_enqueue_seq, %(session_id)s, %(source_key)s, %(delivery_policy)s,
    %(slot_policy)s, %(merge_key)s, %(available_at_ms)s, %(enqueued_at_ms)s, %(payloads)s
FROM seq
RETURNING enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
    available_at_ms, enqueued_at_ms, payloads

-- Candidates never wait: SKIP LOCKED passes over a row some other transaction holds (the queue lock
-- means nothing of ours can; a foreign writer's row is treated as taken, never waited for).  Live, ready
-- (available, not backing off) and free rows, each with its attempts so far; at most the given limit of them (the
-- service reads further past undecodable rows).
-- name: ready_batches
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads, attempts
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND dead_at_ms IS NULL
  AND available_at_ms <= %(now_ms)s AND retry_at_ms <= %(now_ms)s
  AND (claim_token IS NULL OR claim_expires_at_ms <= %(now_ms)s)
ORDER BY enqueue_seq LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: last_fence
SELECT last_fencing_token FROM {schema}.queue_state WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s

-- name: set_fence
INSERT INTO {schema}.queue_state (session_id, queue_session_id, last_fencing_token)
VALUES (%(sid)s, %(session_id)s, %(last_fencing_token)s)
ON CONFLICT (session_id, queue_session_id) DO UPDATE SET last_fencing_token = EXCLUDED.last_fencing_token

-- A claim is an attempt: counted here; retry_at_ms is when the batch may be offered again if this attempt fails
-- (the lease's end plus the backoff), and the last claim's owner and instant are kept for the dead-letter list.
-- name: mark_claimed
UPDATE {schema}.queued_work_batches SET claim_id = %(claim_id)s, claim_owner_id = %(owner_id)s,
    claim_token = %(lease_token)s, claim_fencing_token = %(fencing_token)s, claim_claimed_at_ms = %(now_ms)s,
    claim_expires_at_ms = %(expires_at_ms)s, attempts = attempts + 1, retry_at_ms = %(retry_at_ms)s,
    last_owner_id = %(owner_id)s, last_claimed_at_ms = %(now_ms)s
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND dead_at_ms IS NULL AND (claim_token IS NULL OR claim_expires_at_ms <= %(now_ms)s)

-- name: claimed_batches
SELECT batch_id, claim_fencing_token, attempts, enqueue_seq FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND claim_id = %(claim_id)s
  AND claim_token = %(lease_token)s

-- A fence without completion reads the claim's rows with their expiry (a held lease must still run).
-- name: held_claim_batches
SELECT batch_id, claim_fencing_token, claim_expires_at_ms FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND claim_id = %(claim_id)s
  AND claim_token = %(lease_token)s

-- name: extend_claim
UPDATE {schema}.queued_work_batches SET claim_expires_at_ms = %(expires_at_ms)s, retry_at_ms = %(retry_at_ms)s
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND claim_id = %(claim_id)s AND claim_token = %(lease_token)s AND claim_fencing_token = %(fencing_token)s

-- An abandoned attempt failed now: the batch backs off from now; a given error replaces the last one.
-- A hand-back (uncount = 1) takes the claim's attempt back.
-- name: release_batch
UPDATE {schema}.queued_work_batches SET claim_id = NULL, claim_owner_id = NULL, claim_token = NULL,
    claim_claimed_at_ms = 0, claim_expires_at_ms = 0, retry_at_ms = %(retry_at_ms)s,
    last_error = coalesce(%(error)s, last_error), attempts = greatest(attempts - %(uncount)s, 0)
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND claim_id = %(claim_id)s AND claim_token = %(lease_token)s

-- name: free_batch
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND dead_at_ms IS NULL AND (claim_token IS NULL OR claim_expires_at_ms <= %(now_ms)s)

-- name: batch_by_id
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s

-- name: delete_batch
DELETE FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s

-- name: delete_claimed_batch
DELETE FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND claim_id = %(claim_id)s AND claim_token = %(lease_token)s AND claim_fencing_token = %(fencing_token)s

-- name: list_batches
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND dead_at_ms IS NULL ORDER BY enqueue_seq

-- name: list_pending_batches
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND dead_at_ms IS NULL
  AND (claim_token IS NULL OR claim_expires_at_ms <= %(now_ms)s)
ORDER BY enqueue_seq

-- ----- dead letters: batch columns, then attempts, dead_at_ms, last_owner_id, last_claimed_at_ms, last_error

-- A claim that meets a batch whose every allowed attempt failed sets it aside instead of offering it.
-- A claim under a poison policy first moves every ready batch whose allowed attempts are all used up to the
-- dead-letter list, in one statement, so which batches are dead letters never depends on how far the claim read
-- (ready_batches stops at the claim's window).
-- name: dead_letter_exhausted
UPDATE {schema}.queued_work_batches SET dead_at_ms = %(now_ms)s, claim_id = NULL, claim_owner_id = NULL,
    claim_token = NULL, claim_claimed_at_ms = 0, claim_expires_at_ms = 0
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND dead_at_ms IS NULL
  AND attempts >= %(max_attempts)s AND available_at_ms <= %(now_ms)s AND retry_at_ms <= %(now_ms)s
  AND (claim_token IS NULL OR claim_expires_at_ms <= %(now_ms)s)
RETURNING batch_id

-- name: dead_letters
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads, attempts, dead_at_ms, last_owner_id, last_claimed_at_ms,
       last_error
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND dead_at_ms IS NOT NULL ORDER BY enqueue_seq

-- name: dead_letter_by_id
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads, attempts, dead_at_ms, last_owner_id, last_claimed_at_ms,
       last_error
FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND dead_at_ms IS NOT NULL

-- Back into the queue at its old place (same id and enqueue_seq), as if never attempted.
-- name: requeue_dead_letter
UPDATE {schema}.queued_work_batches SET dead_at_ms = NULL, attempts = 0, retry_at_ms = 0, last_owner_id = NULL,
    last_claimed_at_ms = NULL, last_error = NULL
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND dead_at_ms IS NOT NULL

-- name: drop_dead_letter
DELETE FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND queue_session_id = %(session_id)s AND batch_id = %(batch_id)s
  AND dead_at_ms IS NOT NULL

-- name: batch_rows
SELECT enqueue_seq, batch_id, queue_session_id, source_key, delivery_policy, slot_policy, merge_key,
       available_at_ms, enqueued_at_ms, payloads, claim_id, claim_owner_id, claim_token, claim_fencing_token,
       claim_claimed_at_ms, claim_expires_at_ms, attempts, retry_at_ms, last_owner_id, last_claimed_at_ms,
       last_error, dead_at_ms
FROM {schema}.queued_work_batches WHERE session_id = %(sid)s ORDER BY enqueue_seq

-- name: insert_batch_row
INSERT INTO {schema}.queued_work_batches (session_id, enqueue_seq, batch_id, queue_session_id, source_key,
    delivery_policy, slot_policy, merge_key, available_at_ms, enqueued_at_ms, payloads, claim_id, claim_owner_id,
    claim_token, claim_fencing_token, claim_claimed_at_ms, claim_expires_at_ms, attempts, retry_at_ms,
    last_owner_id, last_claimed_at_ms, last_error, dead_at_ms)
VALUES (%(sid)s, %(enqueue_seq)s, %(batch_id)s, %(session_id)s, %(source_key)s, %(delivery_policy)s,
    %(slot_policy)s, %(merge_key)s, %(available_at_ms)s, %(enqueued_at_ms)s, %(payloads)s, %(claim_id)s,
    %(claim_owner_id)s, %(claim_token)s, %(claim_fencing_token)s, %(claim_claimed_at_ms)s, %(claim_expires_at_ms)s,
    %(attempts)s, %(retry_at_ms)s, %(last_owner_id)s, %(last_claimed_at_ms)s, %(last_error)s, %(dead_at_ms)s)

-- Only queues that ever granted a claim have a fence (as in SQLite); lock rows alone are not data.
-- name: fence_rows
SELECT queue_session_id, last_fencing_token FROM {schema}.queue_state
WHERE session_id = %(sid)s AND last_fencing_token > 0 ORDER BY queue_session_id

-- name: insert_fence_row
INSERT INTO {schema}.queue_state (session_id, queue_session_id, last_fencing_token)
VALUES (%(sid)s, %(session_id)s, %(last_fencing_token)s)
ON CONFLICT (session_id, queue_session_id) DO UPDATE
SET last_fencing_token = GREATEST({schema}.queue_state.last_fencing_token, EXCLUDED.last_fencing_token)

-- The highest enqueue_seq ever handed out in the session (numbers are never reused, even after deletes).
-- name: last_enqueue_seq
SELECT coalesce((SELECT last_enqueue_seq FROM {schema}.queue_counters WHERE session_id = %(sid)s), 0)

-- name: raise_enqueue_seq
INSERT INTO {schema}.queue_counters (session_id, last_enqueue_seq) VALUES (%(sid)s, %(seq)s)
ON CONFLICT (session_id) DO UPDATE
SET last_enqueue_seq = GREATEST({schema}.queue_counters.last_enqueue_seq, EXCLUDED.last_enqueue_seq)

-- ===== emptiness (imports go into empty stores only) ======================

-- name: holds_data
SELECT (SELECT count(*) FROM {schema}.graph_nodes WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.blobs WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.session_meta WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.turn_commits WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.queued_work_batches WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.queue_state WHERE session_id = %(sid)s AND last_fencing_token > 0)
     + (SELECT count(*) FROM {schema}.attachment_manifest WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.artifact_refs WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.staged_writes WHERE session_id = %(sid)s)
     + (SELECT count(*) FROM {schema}.blob_edges WHERE session_id = %(sid)s)

-- ===== rekey (encryption at rest) ==========================================
-- Stored values as they are, a page at a time in key order; each update is a compare-and-set on the old
-- sealed value (random per sealing), so a row a writer changed in between is left to its writer.

-- name: rekey_head
SELECT head_revision, body, usage_ledger FROM {schema}.sessions
WHERE session_id = %(sid)s AND %(after)s::text IS NULL LIMIT %(limit)s

-- name: rekey_head_update
UPDATE {schema}.sessions SET body = %(body)s, usage_ledger = %(usage_ledger)s
WHERE session_id = %(sid)s AND head_revision = %(head_revision)s AND body IS NOT DISTINCT FROM %(old_body)s
  AND usage_ledger IS NOT DISTINCT FROM %(old_usage_ledger)s

-- name: rekey_meta
SELECT session_name, model, cwd, relation FROM {schema}.session_meta
WHERE session_id = %(sid)s AND %(after)s::text IS NULL LIMIT %(limit)s

-- name: rekey_meta_update
UPDATE {schema}.session_meta SET session_name = %(session_name)s, model = %(model)s, cwd = %(cwd)s,
    relation = %(relation)s
WHERE session_id = %(sid)s AND relation = %(old_relation)s AND session_name = %(old_session_name)s
  AND model = %(old_model)s AND cwd IS NOT DISTINCT FROM %(old_cwd)s

-- name: rekey_nodes
SELECT node_id, user_text, body FROM {schema}.graph_nodes
WHERE session_id = %(sid)s AND node_id > %(after)s ORDER BY node_id LIMIT %(limit)s

-- name: rekey_nodes_update
UPDATE {schema}.graph_nodes SET user_text = %(user_text)s, body = %(body)s
WHERE session_id = %(sid)s AND node_id = %(node_id)s AND body = %(old_body)s
  AND user_text IS NOT DISTINCT FROM %(old_user_text)s

-- name: rekey_blobs
SELECT hash, content FROM {schema}.blobs
WHERE session_id = %(sid)s AND hash > %(after)s ORDER BY hash LIMIT %(limit)s

-- name: rekey_blobs_update
UPDATE {schema}.blobs SET content = %(content)s
WHERE session_id = %(sid)s AND hash = %(hash)s AND content = %(old_content)s

-- name: rekey_staged
SELECT anchor_id || chr(1) || task_id || chr(1) || idx::text, anchor_id, task_id, idx, value
FROM {schema}.staged_writes
WHERE session_id = %(sid)s AND anchor_id || chr(1) || task_id || chr(1) || idx::text > %(after)s
ORDER BY anchor_id || chr(1) || task_id || chr(1) || idx::text LIMIT %(limit)s

-- name: rekey_staged_update
UPDATE {schema}.staged_writes SET value = %(value)s
WHERE session_id = %(sid)s AND anchor_id = %(anchor_id)s AND task_id = %(task_id)s AND idx = %(idx)s
  AND value = %(old_value)s

-- name: rekey_turns
SELECT stamp_session_id || chr(1) || turn_id, stamp_session_id, turn_id, record FROM {schema}.turn_commits
WHERE session_id = %(sid)s AND stamp_session_id || chr(1) || turn_id > %(after)s
ORDER BY stamp_session_id || chr(1) || turn_id LIMIT %(limit)s

-- name: rekey_turns_update
UPDATE {schema}.turn_commits SET record = %(record)s
WHERE session_id = %(sid)s AND stamp_session_id = %(session_id)s AND turn_id = %(turn_id)s
  AND record = %(old_record)s

-- name: rekey_batches
SELECT batch_id, payloads, last_error FROM {schema}.queued_work_batches
WHERE session_id = %(sid)s AND batch_id > %(after)s ORDER BY batch_id LIMIT %(limit)s

-- name: rekey_batches_update
UPDATE {schema}.queued_work_batches SET payloads = %(payloads)s, last_error = %(last_error)s
WHERE session_id = %(sid)s AND batch_id = %(batch_id)s AND payloads = %(old_payloads)s
  AND last_error IS NOT DISTINCT FROM %(old_last_error)s

-- name: rekey_attachments
SELECT attachment_id, canonical_uri FROM {schema}.attachment_manifest
WHERE session_id = %(sid)s AND attachment_id > %(after)s ORDER BY attachment_id LIMIT %(limit)s

-- name: rekey_attachments_update
UPDATE {schema}.attachment_manifest SET canonical_uri = %(canonical_uri)s
WHERE session_id = %(sid)s AND attachment_id = %(attachment_id)s AND canonical_uri = %(old_canonical_uri)s
