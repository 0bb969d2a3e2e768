-- Providers proven: bonds in the journal, slashes and bond movements as read models (the
-- activity projection), and the nodes the API flagged for naming another node's GPU.

-- A provider's bond (free and held behind its GPUs), bond withdrawn and waiting for the
-- unbonding delay, and the market's insurance fund (account 0).
ALTER DOMAIN bucket DROP CONSTRAINT bucket_check;
ALTER DOMAIN bucket ADD CONSTRAINT bucket_check
    CHECK (VALUE IN ('available', 'held', 'in_lease', 'settling', 'fees', 'external',
                     'bond', 'unbonding', 'insurance'));

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
       OR NOT n.buckets <@ ARRAY['available', 'held', 'in_lease', 'settling', 'fees', 'external',
                                 'bond', 'unbonding', 'insurance']
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

-- `BondPosted`, `BondUnbonding` (with its release time) and `BondReleased`, per provider.
CREATE TABLE bond_movements (
    partition  integer       NOT NULL,
    event_seq  bigint        NOT NULL,
    provider   bigint        NOT NULL,
    market     text          NOT NULL,
    kind       text          NOT NULL
        CHECK (kind IN ('bond_posted', 'bond_unbonding', 'bond_released')),
    amount     numeric(30,6) NOT NULL CHECK (amount > 0),
    release_at timestamptz,
    at         timestamptz   NOT NULL,
    PRIMARY KEY (partition, event_seq)
);
CREATE INDEX bond_movements_provider ON bond_movements (provider, at);

-- `BondSlashed`: a provider failure of a lease, what it cost the provider's bond, what the
-- buyer was credited and what went to the insurance fund, with the cause and its evidence
-- (the report's sequence number, or the node's last heartbeat). One per lease at most.
CREATE TABLE slashes (
    lease_id     bigint        PRIMARY KEY,
    partition    integer       NOT NULL,
    event_seq    bigint        NOT NULL,
    market       text          NOT NULL,
    provider     bigint        NOT NULL,
    node         text          NOT NULL,
    buyer        bigint        NOT NULL,
    slashed      numeric(30,6) NOT NULL CHECK (slashed > 0),
    buyer_credit numeric(30,6) NOT NULL CHECK (buyer_credit >= 0),
    insurance    numeric(30,6) NOT NULL CHECK (insurance >= 0),
    cause        text          NOT NULL,
    evidence     text,
    at           timestamptz   NOT NULL,
    CHECK (slashed = buyer_credit + insurance)
);
CREATE INDEX slashes_provider ON slashes (provider, at);
CREATE INDEX slashes_buyer ON slashes (buyer, at);

-- A node whose report named a GPU UUID already another node's (`GPU_ALREADY_REGISTERED`):
-- both nodes get a row, each naming the other. Written by the API, which refused the report.
CREATE TABLE node_flags (
    provider       bigint      NOT NULL,
    node           text        NOT NULL,
    uuid           text        NOT NULL,
    other_provider bigint      NOT NULL,
    other_node     text        NOT NULL,
    first_at       timestamptz NOT NULL DEFAULT now(),
    last_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, node, uuid, other_provider, other_node)
);

-- The reputation projection counts a provider's slashes (each costs 10 % of integrity).
ALTER TABLE provider_reputation ADD COLUMN slashes integer NOT NULL DEFAULT 0
    CHECK (slashes >= 0);
