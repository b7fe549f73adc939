-- Every SQL statement of the SQLite backend, by name (see lash_store.core.queries).
-- The services in lash_store.service run these; rows have the columns listed in each SELECT.
-- A list parameter arrives as one JSON array, read with json_each.
-- Blocks left empty are steps SQLite needs no statement for: BEGIN IMMEDIATE already
-- holds the file's one write lock, so there are no rows to lock.

-- ===== locks ==============================================================

-- name: lock_session

-- name: lock_queue

-- ===== head ===============================================================

-- name: read_head
SELECT session_id, head_revision, checkpoint_ref, leaf_node_id, body, usage_ledger, node_count, user_message_count
FROM session_head

-- The head as a commit reads it (the same row; an encrypted store leaves the body it does not use sealed).
-- name: commit_head
SELECT session_id, head_revision, checkpoint_ref, leaf_node_id, body, usage_ledger, node_count, user_message_count
FROM session_head

-- name: write_head
UPDATE session_head
SET session_id = :session_id, head_revision = :head_revision, checkpoint_ref = :checkpoint_ref,
    leaf_node_id = :leaf_node_id, body = :body, usage_ledger = :usage_ledger,
    node_count = :node_count, user_message_count = :user_message_count

-- name: write_counts
UPDATE session_head SET node_count = :node_count, user_message_count = :user_message_count

-- name: clear_leaf
UPDATE session_head SET leaf_node_id = NULL

-- ===== graph ==============================================================

-- name: full_graph
SELECT node_id, body FROM graph_nodes WHERE tombstoned = 0 ORDER BY seq

-- Walk from a leaf to the root; the depth cap (live node count) turns a parent cycle into a finite walk.
-- name: active_path
WITH RECURSIVE path(node_id, parent_node_id, body, depth) AS (
    SELECT node_id, parent_node_id, body, 0 FROM graph_nodes WHERE node_id = :leaf_node_id AND tombstoned = 0
    UNION ALL
    SELECT g.node_id, g.parent_node_id, g.body, p.depth + 1
    FROM path p JOIN graph_nodes g ON g.node_id = p.parent_node_id
    WHERE g.tombstoned = 0 AND p.depth < :depth_cap
)
SELECT node_id, parent_node_id, body FROM path ORDER BY depth

-- name: node_tombstoned
SELECT tombstoned FROM graph_nodes WHERE node_id = :node_id

-- name: load_node
SELECT body FROM graph_nodes WHERE node_id = :node_id AND tombstoned = 0

-- name: nodes_state
SELECT node_id, tombstoned, user_text IS NOT NULL FROM graph_nodes
WHERE node_id IN (SELECT value FROM json_each(:node_ids))

-- name: upsert_node
INSERT INTO graph_nodes (node_id, parent_node_id, user_text, body, kind, lane, sort_key)
VALUES (:node_id, :parent_node_id, :user_text, :body, :kind, :lane, :sort_key)
ON CONFLICT (node_id) DO UPDATE SET parent_node_id = excluded.parent_node_id, user_text = excluded.user_text,
    body = excluded.body, tombstoned = 0, kind = excluded.kind, lane = excluded.lane, sort_key = excluded.sort_key

-- name: delete_graph
DELETE FROM node_tags;
DELETE FROM node_blob_refs;
DELETE FROM graph_nodes

-- ===== node index (tags, blob refs, queries) ==============================

-- name: delete_node_index
DELETE FROM node_tags WHERE node_id IN (SELECT value FROM json_each(:node_ids));
DELETE FROM node_blob_refs WHERE node_id IN (SELECT value FROM json_each(:node_ids))

-- name: insert_node_tag
INSERT OR IGNORE INTO node_tags (node_id, tag) VALUES (:node_id, :tag)

-- name: insert_node_ref
INSERT OR IGNORE INTO node_blob_refs (node_id, ref) VALUES (:node_id, :ref)

-- Vacuum: the index rows and staged writes of tombstoned nodes go with them.
-- name: delete_tombstoned_index
DELETE FROM node_tags WHERE node_id IN (SELECT node_id FROM graph_nodes WHERE tombstoned = 1);
DELETE FROM node_blob_refs WHERE node_id IN (SELECT node_id FROM graph_nodes WHERE tombstoned = 1);
DELETE FROM staged_writes WHERE anchor_id IN (SELECT node_id FROM graph_nodes WHERE tombstoned = 1)

-- Live nodes by kind, lane, sort key and tags (all of :tags must be present: the count of matches).
-- Nodes without a sort key sort after those with one, then by insertion.
-- name: query_nodes
SELECT g.node_id, g.body FROM graph_nodes g
WHERE g.tombstoned = 0
  AND (:kind IS NULL OR g.kind = :kind)
  AND (:any_lane OR g.lane = :lane)
  AND (:sort_before IS NULL OR g.sort_key < :sort_before)
  AND (:sort_key IS NULL OR g.sort_key = :sort_key)
  AND (:tag_count = 0 OR (SELECT count(*) FROM node_tags t
       WHERE t.node_id = g.node_id AND t.tag IN (SELECT value FROM json_each(:tags))) = :tag_count)
ORDER BY g.sort_key DESC NULLS LAST, g.seq DESC
LIMIT coalesce(:limit, -1)

-- GC roots closed over blob children: the given roots, the blob refs of live nodes, and what they reach.
-- name: reachable_refs
WITH RECURSIVE reach(ref) AS (
    SELECT value FROM json_each(:roots)
    UNION
    SELECT r.ref FROM node_blob_refs r JOIN graph_nodes g ON g.node_id = r.node_id WHERE g.tombstoned = 0
    UNION
    SELECT e.child_ref FROM blob_edges e JOIN reach ON e.parent_ref = reach.ref
)
SELECT ref FROM reach

-- name: node_tag_rows
SELECT node_id, tag FROM node_tags ORDER BY node_id, tag

-- name: node_ref_rows
SELECT node_id, ref FROM node_blob_refs ORDER BY node_id, ref

-- ===== staged writes ======================================================

-- name: put_staged_write
INSERT INTO staged_writes (anchor_id, task_id, idx, task_path, channel, value)
VALUES (:anchor_id, :task_id, :idx, :task_path, :channel, :value)
ON CONFLICT (anchor_id, task_id, idx) DO NOTHING

-- name: replace_staged_write
INSERT INTO staged_writes (anchor_id, task_id, idx, task_path, channel, value)
VALUES (:anchor_id, :task_id, :idx, :task_path, :channel, :value)
ON CONFLICT (anchor_id, task_id, idx) DO UPDATE SET task_path = excluded.task_path, channel = excluded.channel,
    value = excluded.value

-- name: load_staged_writes
SELECT anchor_id, task_id, idx, task_path, channel, value FROM staged_writes
WHERE anchor_id IN (SELECT value FROM json_each(:anchor_ids))
  AND (:any_channel OR channel IN (SELECT value FROM json_each(:channels)))
ORDER BY seq

-- name: delete_staged_writes
DELETE FROM staged_writes WHERE anchor_id IN (SELECT value FROM json_each(:anchor_ids))

-- name: staged_write_rows
SELECT anchor_id, task_id, idx, task_path, channel, value FROM staged_writes ORDER BY seq

-- name: insert_staged_write_row
INSERT INTO staged_writes (anchor_id, task_id, idx, task_path, channel, value)
VALUES (:anchor_id, :task_id, :idx, :task_path, :channel, :value)

-- name: tombstone_node
UPDATE graph_nodes SET tombstoned = 1 WHERE node_id = :node_id AND tombstoned = 0

-- name: delete_tombstoned
DELETE FROM graph_nodes WHERE tombstoned = 1

-- name: first_user_text
SELECT user_text FROM graph_nodes WHERE user_text IS NOT NULL AND tombstoned = 0 ORDER BY seq LIMIT 1

-- name: node_rows
SELECT node_id, parent_node_id, tombstoned, user_text, body FROM graph_nodes ORDER BY seq

-- name: insert_node_row
INSERT INTO graph_nodes (node_id, parent_node_id, tombstoned, user_text, body, kind, lane, sort_key)
VALUES (:node_id, :parent_node_id, :tombstoned, :user_text, :body, :kind, :lane, :sort_key)

-- ===== turn commits =======================================================

-- name: find_turn_commit
SELECT record FROM runtime_turn_commits WHERE session_id = :session_id AND turn_id = :turn_id

-- name: record_turn_commit
INSERT INTO runtime_turn_commits (session_id, turn_id, record, committed_at_ms)
VALUES (:session_id, :turn_id, :record, :committed_at_ms)

-- name: turn_commit_rows
SELECT session_id, turn_id, record, committed_at_ms FROM runtime_turn_commits ORDER BY committed_at_ms, session_id, turn_id

-- name: count_old_turn_commits
SELECT count(*) FROM runtime_turn_commits WHERE committed_at_ms < :cutoff_ms

-- name: delete_old_turn_commits
DELETE FROM runtime_turn_commits WHERE committed_at_ms < :cutoff_ms

-- ===== blobs ==============================================================

-- A re-put keeps the first writer's bytes and refreshes the GC grace clock.
-- name: put_blob
INSERT INTO blobs (hash, encoding, kind, raw_size, created_at_ms, content)
VALUES (:hash, :encoding, :kind, :raw_size, :created_at_ms, :content)
ON CONFLICT (hash) DO UPDATE SET created_at_ms = max(created_at_ms, excluded.created_at_ms)

-- name: get_blob
SELECT encoding, content, raw_size FROM blobs WHERE hash = :hash

-- name: get_blobs
SELECT hash, encoding, content, raw_size FROM blobs WHERE hash IN (SELECT value FROM json_each(:refs))

-- name: count_blobs
SELECT count(*) FROM blobs

-- name: sweep_blobs
DELETE FROM blobs
WHERE created_at_ms <= :cutoff_ms
  AND hash NOT IN (SELECT value FROM json_each(:live))
  AND hash NOT IN (SELECT blob_ref FROM artifact_refs)

-- Edges of blobs that are gone (after a sweep).
-- name: sweep_edges
DELETE FROM blob_edges WHERE parent_ref NOT IN (SELECT hash FROM blobs)

-- name: sweep_candidates
SELECT count(*), coalesce(sum(length(content)), 0) FROM blobs
WHERE created_at_ms <= :cutoff_ms
  AND hash NOT IN (SELECT value FROM json_each(:live))
  AND hash NOT IN (SELECT blob_ref FROM artifact_refs)

-- name: blob_rows
SELECT hash, encoding, kind, raw_size, created_at_ms, content FROM blobs
WHERE hash IN (SELECT value FROM json_each(:refs)) OR hash IN (SELECT blob_ref FROM artifact_refs)
ORDER BY id

-- name: blob_sizes
SELECT hash, encoding, kind, raw_size, created_at_ms, length(content) FROM blobs ORDER BY id

-- name: all_blob_rows
SELECT hash, encoding, kind, raw_size, created_at_ms, content FROM blobs ORDER BY id

-- name: put_blob_edge
INSERT OR IGNORE INTO blob_edges (parent_ref, child_ref) VALUES (:parent_ref, :child_ref)

-- name: blob_edge_rows
SELECT parent_ref, child_ref FROM blob_edges
WHERE :all_edges OR parent_ref IN (SELECT value FROM json_each(:refs))
ORDER BY parent_ref, child_ref

-- name: insert_blob_row
INSERT INTO blobs (hash, encoding, kind, raw_size, created_at_ms, content)
VALUES (:hash, :encoding, :kind, :raw_size, :created_at_ms, :content)
ON CONFLICT (hash) DO UPDATE SET created_at_ms = max(created_at_ms, excluded.created_at_ms)

-- ===== metadata ===========================================================

-- name: save_meta
INSERT OR REPLACE INTO session_meta (singleton, session_id, session_name, created_at, model, cwd, relation)
VALUES (1, :session_id, :session_name, :created_at, :model, :cwd, :relation)

-- name: load_meta
SELECT session_id, session_name, created_at, model, cwd, relation FROM session_meta

-- ===== attachments ========================================================

-- Re-recording an uncommitted intent refreshes it; a committed row never changes.
-- name: record_intent
INSERT INTO attachment_manifest (attachment_id, session_id, canonical_uri, intent_at_ms, committed_at_ms)
VALUES (:attachment_id, :session_id, :canonical_uri, :intent_at_ms, NULL)
ON CONFLICT (attachment_id) DO UPDATE SET session_id = excluded.session_id, canonical_uri = excluded.canonical_uri,
    intent_at_ms = max(intent_at_ms, excluded.intent_at_ms)
WHERE committed_at_ms IS NULL

-- First commit wins: only rows of this session that are still uncommitted are stamped.
-- name: stamp_attachment
UPDATE attachment_manifest SET committed_at_ms = :committed_at_ms
WHERE attachment_id = :attachment_id AND session_id = :session_id AND committed_at_ms IS NULL

-- name: list_uncommitted
SELECT attachment_id, session_id, canonical_uri, intent_at_ms FROM attachment_manifest
WHERE committed_at_ms IS NULL AND intent_at_ms <= :older_than_ms ORDER BY intent_at_ms, attachment_id

-- name: forget_attachment
DELETE FROM attachment_manifest WHERE attachment_id = :attachment_id

-- name: attachment_rows
SELECT attachment_id, session_id, canonical_uri, intent_at_ms, committed_at_ms FROM attachment_manifest
ORDER BY attachment_id

-- name: insert_attachment_row
INSERT INTO attachment_manifest (attachment_id, session_id, canonical_uri, intent_at_ms, committed_at_ms)
VALUES (:attachment_id, :session_id, :canonical_uri, :intent_at_ms, :committed_at_ms)

-- ===== module artifacts ===================================================

-- name: pin_module
INSERT OR REPLACE INTO artifact_refs (artifact_ref, blob_ref) VALUES (:module_ref, :blob_ref)

-- name: module_blob_ref
SELECT blob_ref FROM artifact_refs WHERE artifact_ref = :module_ref

-- name: unpin_module
DELETE FROM artifact_refs WHERE artifact_ref = :module_ref

-- name: count_modules
SELECT count(*) FROM artifact_refs

-- name: module_rows
SELECT artifact_ref, blob_ref FROM artifact_refs ORDER BY artifact_ref

-- ===== work queue =========================================================
-- Batch rows are selected as: enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy,
-- merge_key, available_at_ms, enqueued_at_ms, payloads  (lash_store.core.queue.BatchRow)
-- A row with dead_at_ms set is a dead letter: no longer queued work (see PoisonPolicy).  It keeps its
-- source key, so a producer retrying the enqueue gets it back instead of a new copy of the poison.

-- name: batch_by_source_key
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads
FROM queued_work_batches WHERE session_id = :session_id AND source_key = :source_key

-- name: insert_batch
INSERT INTO queued_work_batches (batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key,
    available_at_ms, enqueued_at_ms, payloads)
VALUES (:batch_id, :session_id, :source_key, :delivery_policy, :slot_policy, :merge_key, :available_at_ms,
    :enqueued_at_ms, :payloads)
RETURNING enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads

-- Ready (available, not backing off) and free (unclaimed, or the lease ran out) live batches in FIFO order,
-- each with its attempts so far; at most :limit of them (the service reads further past undecodable rows).
-- name: ready_batches
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads, attempts
FROM queued_work_batches
WHERE session_id = :session_id AND dead_at_ms IS NULL AND available_at_ms <= :now_ms AND retry_at_ms <= :now_ms
  AND (claim_token IS NULL OR claim_expires_at_ms <= :now_ms)
ORDER BY enqueue_seq LIMIT :limit

-- name: last_fence
SELECT last_fencing_token FROM queued_work_sessions WHERE session_id = :session_id

-- name: set_fence
INSERT INTO queued_work_sessions (session_id, last_fencing_token) VALUES (:session_id, :last_fencing_token)
ON CONFLICT (session_id) DO UPDATE SET last_fencing_token = excluded.last_fencing_token

-- A claim is an attempt: counted here; retry_at_ms is when the batch may be offered again if this attempt fails
-- (the lease's end plus the backoff), and the last claim's owner and instant are kept for the dead-letter list.
-- name: mark_claimed
UPDATE queued_work_batches SET claim_id = :claim_id, claim_owner_id = :owner_id, claim_token = :lease_token,
    claim_fencing_token = :fencing_token, claim_claimed_at_ms = :now_ms, claim_expires_at_ms = :expires_at_ms,
    attempts = attempts + 1, retry_at_ms = :retry_at_ms, last_owner_id = :owner_id, last_claimed_at_ms = :now_ms
WHERE session_id = :session_id AND batch_id = :batch_id AND dead_at_ms IS NULL
  AND (claim_token IS NULL OR claim_expires_at_ms <= :now_ms)

-- name: claimed_batches
SELECT batch_id, claim_fencing_token, attempts, enqueue_seq FROM queued_work_batches
WHERE session_id = :session_id AND claim_id = :claim_id AND claim_token = :lease_token

-- A fence without completion reads the claim's rows with their expiry (a held lease must still run).
-- name: held_claim_batches
SELECT batch_id, claim_fencing_token, claim_expires_at_ms FROM queued_work_batches
WHERE session_id = :session_id AND claim_id = :claim_id AND claim_token = :lease_token

-- name: extend_claim
UPDATE queued_work_batches SET claim_expires_at_ms = :expires_at_ms, retry_at_ms = :retry_at_ms
WHERE session_id = :session_id AND batch_id = :batch_id AND claim_id = :claim_id AND claim_token = :lease_token
  AND claim_fencing_token = :fencing_token

-- An abandoned attempt failed now: the batch backs off from now; a given error replaces the last one.
-- A hand-back (uncount = 1) takes the claim's attempt back.
-- name: release_batch
UPDATE queued_work_batches SET claim_id = NULL, claim_owner_id = NULL, claim_token = NULL,
    claim_claimed_at_ms = 0, claim_expires_at_ms = 0, retry_at_ms = :retry_at_ms,
    last_error = coalesce(:error, last_error), attempts = max(attempts - :uncount, 0)
WHERE session_id = :session_id AND batch_id = :batch_id AND claim_id = :claim_id AND claim_token = :lease_token

-- name: free_batch
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads
FROM queued_work_batches
WHERE session_id = :session_id AND batch_id = :batch_id AND dead_at_ms IS NULL
  AND (claim_token IS NULL OR claim_expires_at_ms <= :now_ms)

-- name: batch_by_id
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads
FROM queued_work_batches WHERE session_id = :session_id AND batch_id = :batch_id

-- name: delete_batch
DELETE FROM queued_work_batches WHERE session_id = :session_id AND batch_id = :batch_id

-- name: delete_claimed_batch
DELETE FROM queued_work_batches
WHERE session_id = :session_id AND batch_id = :batch_id AND claim_id = :claim_id AND claim_token = :lease_token
  AND claim_fencing_token = :fencing_token

-- Queued work of any session in the file: a session with work waiting is not idle.
-- name: queued_batch_count
SELECT count(*) FROM queued_work_batches

-- name: list_batches
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads
FROM queued_work_batches WHERE session_id = :session_id AND dead_at_ms IS NULL ORDER BY enqueue_seq

-- name: list_pending_batches
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads
FROM queued_work_batches
WHERE session_id = :session_id AND dead_at_ms IS NULL AND (claim_token IS NULL OR claim_expires_at_ms <= :now_ms)
ORDER BY enqueue_seq

-- ----- dead letters: batch columns, then attempts, dead_at_ms, last_owner_id, last_claimed_at_ms, last_error

-- A claim that meets a batch whose every allowed attempt failed sets it aside instead of offering it.
-- A claim under a poison policy first moves every ready batch whose allowed attempts are all used up to the
-- dead-letter list, in one statement, so which batches are dead letters never depends on how far the claim read.
-- name: dead_letter_exhausted
UPDATE queued_work_batches SET dead_at_ms = :now_ms, claim_id = NULL, claim_owner_id = NULL, claim_token = NULL,
    claim_claimed_at_ms = 0, claim_expires_at_ms = 0
WHERE session_id = :session_id AND dead_at_ms IS NULL AND attempts >= :max_attempts
  AND available_at_ms <= :now_ms AND retry_at_ms <= :now_ms AND (claim_token IS NULL OR claim_expires_at_ms <= :now_ms)
RETURNING batch_id

-- name: dead_letters
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads, attempts, dead_at_ms, last_owner_id, last_claimed_at_ms, last_error
FROM queued_work_batches WHERE session_id = :session_id AND dead_at_ms IS NOT NULL ORDER BY enqueue_seq

-- name: dead_letter_by_id
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads, attempts, dead_at_ms, last_owner_id, last_claimed_at_ms, last_error
FROM queued_work_batches WHERE session_id = :session_id AND batch_id = :batch_id AND dead_at_ms IS NOT NULL

-- Back into the queue at its old place (same id and enqueue_seq), as if never attempted.
-- name: requeue_dead_letter
UPDATE queued_work_batches SET dead_at_ms = NULL, attempts = 0, retry_at_ms = 0, last_owner_id = NULL,
    last_claimed_at_ms = NULL, last_error = NULL
WHERE session_id = :session_id AND batch_id = :batch_id AND dead_at_ms IS NOT NULL

-- name: drop_dead_letter
DELETE FROM queued_work_batches WHERE session_id = :session_id AND batch_id = :batch_id AND dead_at_ms IS NOT NULL

-- Whole rows, claim and poison state included, for export and fork.
-- name: batch_rows
SELECT enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy, merge_key, available_at_ms,
    enqueued_at_ms, payloads, claim_id, claim_owner_id, claim_token, claim_fencing_token, claim_claimed_at_ms,
    claim_expires_at_ms, attempts, retry_at_ms, last_owner_id, last_claimed_at_ms, last_error, dead_at_ms
FROM queued_work_batches ORDER BY enqueue_seq

-- name: insert_batch_row
INSERT INTO queued_work_batches (enqueue_seq, batch_id, session_id, source_key, delivery_policy, slot_policy,
    merge_key, available_at_ms, enqueued_at_ms, payloads, claim_id, claim_owner_id, claim_token,
    claim_fencing_token, claim_claimed_at_ms, claim_expires_at_ms, attempts, retry_at_ms, last_owner_id,
    last_claimed_at_ms, last_error, dead_at_ms)
VALUES (:enqueue_seq, :batch_id, :session_id, :source_key, :delivery_policy, :slot_policy, :merge_key,
    :available_at_ms, :enqueued_at_ms, :payloads, :claim_id, :claim_owner_id, :claim_token, :claim_fencing_token,
    :claim_claimed_at_ms, :claim_expires_at_ms, :attempts, :retry_at_ms, :last_owner_id, :last_claimed_at_ms,
    :last_error, :dead_at_ms)

-- name: fence_rows
SELECT session_id, last_fencing_token FROM queued_work_sessions ORDER BY session_id

-- name: insert_fence_row
INSERT INTO queued_work_sessions (session_id, last_fencing_token) VALUES (:session_id, :last_fencing_token)

-- The highest enqueue_seq ever handed out (sequence numbers are never reused, even after deletes).
-- name: last_enqueue_seq
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'queued_work_batches'), 0)

-- name: raise_enqueue_seq
UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'queued_work_batches';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'queued_work_batches', :seq WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'queued_work_batches')

-- ===== emptiness (imports go into empty stores only) ======================

-- A session file exists while it is open: a missing head row in it is damage, never a deleted session.
-- name: session_exists
SELECT 1

-- name: holds_data
SELECT (SELECT count(*) FROM graph_nodes) + (SELECT count(*) FROM blobs) + (SELECT count(*) FROM session_meta)
    + (SELECT count(*) FROM runtime_turn_commits) + (SELECT count(*) FROM queued_work_batches)
    + (SELECT count(*) FROM queued_work_sessions) + (SELECT count(*) FROM attachment_manifest)
    + (SELECT count(*) FROM artifact_refs) + (SELECT count(*) FROM staged_writes) + (SELECT count(*) FROM blob_edges)

-- ===== rekey (encryption at rest) ==========================================
-- Stored values as they are, a page at a time in key order; each update is a compare-and-set on the old
-- sealed value (random per sealing), so a row a writer changed in between is left to its writer.

-- name: rekey_head
SELECT head_revision, body, usage_ledger FROM session_head WHERE :after IS NULL LIMIT :limit

-- name: rekey_head_update
UPDATE session_head SET body = :body, usage_ledger = :usage_ledger
WHERE head_revision = :head_revision AND body IS :old_body AND usage_ledger IS :old_usage_ledger

-- name: rekey_meta
SELECT session_name, model, cwd, relation FROM session_meta WHERE :after IS NULL LIMIT :limit

-- name: rekey_meta_update
UPDATE session_meta SET session_name = :session_name, model = :model, cwd = :cwd, relation = :relation
WHERE relation = :old_relation AND session_name = :old_session_name AND model = :old_model AND cwd IS :old_cwd

-- name: rekey_nodes
SELECT node_id, user_text, body FROM graph_nodes WHERE node_id > :after ORDER BY node_id LIMIT :limit

-- name: rekey_nodes_update
UPDATE graph_nodes SET user_text = :user_text, body = :body
WHERE node_id = :node_id AND body = :old_body AND user_text IS :old_user_text

-- name: rekey_blobs
SELECT hash, content FROM blobs WHERE hash > :after ORDER BY hash LIMIT :limit

-- name: rekey_blobs_update
UPDATE blobs SET content = :content WHERE hash = :hash AND content = :old_content

-- name: rekey_staged
SELECT anchor_id || char(1) || task_id || char(1) || idx, anchor_id, task_id, idx, value FROM staged_writes
WHERE anchor_id || char(1) || task_id || char(1) || idx > :after
ORDER BY anchor_id || char(1) || task_id || char(1) || idx LIMIT :limit

-- name: rekey_staged_update
UPDATE staged_writes SET value = :value
WHERE anchor_id = :anchor_id AND task_id = :task_id AND idx = :idx AND value = :old_value

-- name: rekey_turns
SELECT session_id || char(1) || turn_id, session_id, turn_id, record FROM runtime_turn_commits
WHERE session_id || char(1) || turn_id > :after ORDER BY session_id || char(1) || turn_id LIMIT :limit

-- name: rekey_turns_update
UPDATE runtime_turn_commits SET record = :record
WHERE session_id = :session_id AND turn_id = :turn_id AND record = :old_record

-- name: rekey_batches
SELECT batch_id, payloads, last_error FROM queued_work_batches WHERE batch_id > :after ORDER BY batch_id LIMIT :limit

-- name: rekey_batches_update
UPDATE queued_work_batches SET payloads = :payloads, last_error = :last_error
WHERE batch_id = :batch_id AND payloads = :old_payloads AND last_error IS :old_last_error

-- name: rekey_attachments
SELECT attachment_id, canonical_uri FROM attachment_manifest
WHERE attachment_id > :after ORDER BY attachment_id LIMIT :limit

-- name: rekey_attachments_update
UPDATE attachment_manifest SET canonical_uri = :canonical_uri
WHERE attachment_id = :attachment_id AND canonical_uri = :old_canonical_uri
