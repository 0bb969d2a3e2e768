-- Leases meter themselves. Usage is billed per charge period as it accrues, so a
-- usage line is one charge period of one lease (a lease ended by the old `EndLease` keeps
-- its one line); lines are settled when their lease's money moves; leases say how and why
-- they closed and which order re-bid them; markets carry their configuration.

-- What billing reads of a market's configuration (the charge period and the heartbeat
-- timeout, which delays each period's accrual), and all of it in the contract's JSON form
-- once a `ConfigureMarket` set it. The projection writes the contract's defaults for a new
-- market, so there are no defaults here.
ALTER TABLE markets
    ADD COLUMN charge_period_s      integer NOT NULL DEFAULT 3600
        CHECK (charge_period_s BETWEEN 1 AND 86400 AND 86400 % charge_period_s = 0),
    ADD COLUMN heartbeat_timeout_ms integer NOT NULL DEFAULT 30000 CHECK (heartbeat_timeout_ms > 0),
    ADD COLUMN config               jsonb,
    ADD COLUMN configured_seq       bigint,
    ADD COLUMN configured_at        timestamptz;
ALTER TABLE markets
    ALTER COLUMN charge_period_s DROP DEFAULT,
    ALTER COLUMN heartbeat_timeout_ms DROP DEFAULT;

-- A metered lease's `LeaseClosed`: the cause (`LeaseEndCause`, e.g. `node_silent`) with what
-- the engine judged it by (the node's last heartbeat, the report's sequence, the operator's
-- reason), up to when it is charged and for how long; and the re-bid its failure placed, or
-- why that was refused.
ALTER TABLE leases
    ADD COLUMN close_cause   text,
    ADD COLUMN close_detail  text,
    ADD COLUMN charged_until timestamptz,
    ADD COLUMN charged_ms    bigint CHECK (charged_ms >= 0),
    ADD COLUMN closed_seq    bigint,
    ADD COLUMN rebid_order   bigint,
    ADD COLUMN rebid_refused text;
-- The re-bid chain both ways: a failed lease → the order it placed → the leases that filled
-- that order.
CREATE INDEX leases_by_rebid_order ON leases (partition, rebid_order) WHERE rebid_order IS NOT NULL;
CREATE INDEX leases_by_bid_order ON leases (partition, bid_order);

-- A usage line per lease and charge period: `charge_start`/`charge_end` are the period,
-- `usage_start`/`usage_end` the charged time inside it. `settled_seq`/`settled_at` are the
-- `LeaseEnded` that moved the money; until then the line is accrued revenue. Lease-level
-- facts (`refunded`, `end_reason`) stay on the old lines only; the lease row has them.
ALTER TABLE usage_lines DROP CONSTRAINT usage_lines_pkey;
ALTER TABLE usage_lines
    ADD COLUMN usage_start timestamptz,
    ADD COLUMN usage_end   timestamptz,
    ADD COLUMN settled_seq bigint,
    ADD COLUMN settled_at  timestamptz;
UPDATE usage_lines
SET usage_start = charge_start, usage_end = charge_end, settled_seq = event_seq,
    settled_at = charge_end;
ALTER TABLE usage_lines
    ALTER COLUMN usage_start SET NOT NULL,
    ALTER COLUMN usage_end SET NOT NULL,
    ALTER COLUMN refunded DROP NOT NULL,
    ALTER COLUMN end_reason DROP NOT NULL,
    ADD CONSTRAINT usage_lines_within_period
        CHECK (charge_start <= usage_start AND usage_start <= usage_end AND usage_end <= charge_end),
    ADD PRIMARY KEY (partition, lease_id, charge_start);
-- Accrued revenue not yet settled, per provider; the FOCUS export's rows by their period.
CREATE INDEX usage_lines_unsettled ON usage_lines (provider) WHERE settled_seq IS NULL;
CREATE INDEX usage_lines_by_start ON usage_lines (charge_start);
