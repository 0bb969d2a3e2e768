-- The chain bridge (6/7): a `settling` bucket, the settlement read models the activity
-- projection keeps, and the bridge's own state.

-- Money on its way out: requested withdrawals and the payouts of an open settlement batch.
ALTER DOMAIN bucket DROP CONSTRAINT bucket_check;
ALTER DOMAIN bucket ADD CONSTRAINT bucket_check
    CHECK (VALUE IN ('available', 'held', 'in_lease', 'settling', 'fees', 'external'));

CREATE OR REPLACE FUNCTION journal_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.partition, n.event_seq, (SELECT sum(x) FROM unnest(n.amounts) x) AS total
    INTO bad
    FROM new_transactions n
    WHERE cardinality(n.accounts) < 2
       OR cardinality(n.buckets) <> cardinality(n.accounts)
       OR cardinality(n.amounts) <> cardinality(n.accounts)
       OR NOT n.buckets <@ ARRAY['available', 'held', 'in_lease', 'settling', 'fees', 'external']
       OR 0 = ANY (n.amounts)
       OR (SELECT sum(x) FROM unnest(n.amounts) x) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal transaction %/% does not balance: its legs sum to % or are malformed',
            bad.partition, bad.event_seq, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Read models (the activity projection): payout addresses, credited chain deposits and
-- settlement batches with their payouts.

CREATE TABLE payout_addresses (
    account   bigint      PRIMARY KEY,
    address   text        NOT NULL,
    partition integer     NOT NULL,
    event_seq bigint      NOT NULL,
    set_at    timestamptz NOT NULL
);

CREATE TABLE chain_deposits (
    tx_hash   text          NOT NULL,
    msg_index integer       NOT NULL,
    account   bigint        NOT NULL,
    amount    numeric(30,6) NOT NULL CHECK (amount > 0),
    partition integer       NOT NULL,
    event_seq bigint        NOT NULL,
    at        timestamptz   NOT NULL,
    PRIMARY KEY (tx_hash, msg_index)
);
CREATE INDEX chain_deposits_by_account ON chain_deposits (account, at);

CREATE TABLE settlements (
    batch     bigint        PRIMARY KEY,
    partition integer       NOT NULL,
    state     text          NOT NULL CHECK (state IN ('open', 'confirmed', 'failed')),
    total     numeric(30,6) NOT NULL,
    payouts   integer       NOT NULL,
    opened_at timestamptz   NOT NULL,
    closed_at timestamptz,
    tx_hash   text,
    height    bigint,
    reason    text
);
CREATE INDEX settlements_by_time ON settlements (opened_at);

CREATE TABLE settlement_payouts (
    batch          bigint        NOT NULL REFERENCES settlements (batch),
    account        bigint        NOT NULL,
    address        text          NOT NULL,
    amount         numeric(30,6) NOT NULL CHECK (amount > 0),
    from_available numeric(30,6) NOT NULL,
    PRIMARY KEY (batch, account)
);
CREATE INDEX settlement_payouts_by_account ON settlement_payouts (account, batch);

-- ---------------------------------------------------------------------------------------
-- The bridge's own state. Not a projection: it is what the bridge saw on chain and what it
-- signed, and a projection rebuild leaves it alone.

-- Every transfer into or out of the escrow account the bridge has seen in a final block.
-- `state`: for deposits `credited` (the engine has the deposit), `pending` (not yet
-- credited) or `unmatched` (missing or unknown memo: for manual handling, never guessed);
-- for payouts `payout`.
CREATE TABLE bridge_transfers (
    tx_hash      text        NOT NULL,
    msg_index    integer     NOT NULL,
    -- The output of a multi-send message (0 for a plain send).
    output_index integer     NOT NULL,
    direction    text        NOT NULL CHECK (direction IN ('in', 'out')),
    height       bigint      NOT NULL,
    block_time   timestamptz NOT NULL,
    counterparty text        NOT NULL,
    memo         text        NOT NULL,
    -- In the denom's base units, and in the market's unit when it converts exactly.
    base_amount  numeric(40,0) NOT NULL,
    amount       numeric(30,6),
    account      bigint,
    state        text        NOT NULL CHECK (state IN ('credited', 'pending', 'unmatched', 'payout')),
    note         text,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_hash, msg_index, output_index)
);
CREATE INDEX bridge_transfers_by_time ON bridge_transfers (block_time);
CREATE INDEX bridge_transfers_pending ON bridge_transfers (state) WHERE state IN ('pending', 'unmatched');

-- A settlement batch's transaction, stored before it is broadcast. `tx_bytes` and `tx_hash`
-- are replaced only when the chain's sequence moved past this transaction without
-- including it (so the old bytes can never land); the replaced hashes are kept.
CREATE TABLE bridge_settlement_txs (
    batch           bigint      PRIMARY KEY,
    tx_hash         text        NOT NULL,
    tx_bytes        bytea       NOT NULL,
    account_number  bigint      NOT NULL,
    sequence        bigint      NOT NULL,
    state           text        NOT NULL CHECK (state IN ('signed', 'broadcast', 'included', 'confirmed', 'failed')),
    height          bigint,
    result          text,
    replaced_hashes text[]      NOT NULL DEFAULT '{}',
    broadcasts      integer     NOT NULL DEFAULT 0,
    signed_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- How far the bridge has scanned the chain for escrow transfers.
CREATE TABLE bridge_cursor (
    chain_id       text   PRIMARY KEY,
    scanned_height bigint NOT NULL
);
