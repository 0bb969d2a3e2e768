-- Per-period lines cannot fold back into one line per lease: they go (the old lines, which
-- carry their lease's end reason, stay). Invoices and earnings still count them: rebuild
-- the activity projection after this.
DROP INDEX usage_lines_unsettled;
DROP INDEX usage_lines_by_start;
DELETE FROM usage_lines WHERE end_reason IS NULL;
ALTER TABLE usage_lines DROP CONSTRAINT usage_lines_pkey;
ALTER TABLE usage_lines DROP CONSTRAINT usage_lines_within_period;
ALTER TABLE usage_lines
    DROP COLUMN usage_start,
    DROP COLUMN usage_end,
    DROP COLUMN settled_seq,
    DROP COLUMN settled_at,
    ALTER COLUMN refunded SET NOT NULL,
    ALTER COLUMN end_reason SET NOT NULL,
    ADD PRIMARY KEY (partition, lease_id);

DROP INDEX leases_by_rebid_order;
DROP INDEX leases_by_bid_order;
ALTER TABLE leases
    DROP COLUMN close_cause,
    DROP COLUMN close_detail,
    DROP COLUMN charged_until,
    DROP COLUMN charged_ms,
    DROP COLUMN closed_seq,
    DROP COLUMN rebid_order,
    DROP COLUMN rebid_refused;

ALTER TABLE markets
    DROP COLUMN charge_period_s,
    DROP COLUMN heartbeat_timeout_ms,
    DROP COLUMN config,
    DROP COLUMN configured_seq,
    DROP COLUMN configured_at;
