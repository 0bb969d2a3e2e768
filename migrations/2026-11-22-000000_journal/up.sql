-- The projector framework and the double-entry journal (issue 3/7, first slice).

-- Where each projector stands in the event log. A projector updates its row in the same
-- transaction as the rows it writes, so its position and its tables never disagree.
CREATE TABLE projector_offsets (
    projector   text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    -- The offset of the next record to project: every record below it is applied.
    next_offset bigint  NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (projector, topic, partition)
);

-- The buckets money sits in. `available`, `held` and `in_lease` are the engine's buckets of
-- a trading account; `fees` is the market account's (account 0) income; `external` is each
-- account's contra bucket for money that entered or left the market (minus its net
-- deposits). Later slices add buckets (e.g. `collateral`) by replacing this constraint.
CREATE DOMAIN bucket AS text
    CHECK (VALUE IN ('available', 'held', 'in_lease', 'fees', 'external'));

-- One journal transaction per event that moves money. The key is the event's place in the
-- log, not a sequence: sequences are not transactional, so a rolled-back batch would leave
-- gaps and a rebuild from offset zero would not reproduce the same ids.
CREATE TABLE journal_transactions (
    partition      integer     NOT NULL,
    event_seq      bigint      NOT NULL,
    command_offset bigint      NOT NULL,
    kind           text        NOT NULL,
    at             timestamptz NOT NULL,
    PRIMARY KEY (partition, event_seq)
);

-- The legs of a journal transaction; the amounts of one transaction sum to zero.
CREATE TABLE postings (
    partition integer       NOT NULL,
    event_seq bigint        NOT NULL,
    leg       smallint      NOT NULL,
    account   bigint        NOT NULL,
    bucket    bucket        NOT NULL,
    amount    numeric(30,6) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (partition, event_seq, leg)
    -- No FOREIGN KEY to journal_transactions: its per-row check halved the projector's
    -- throughput. The statement-level trigger below checks the same thing per INSERT.
);

-- The sum of the postings per account and bucket, kept in the same transaction.
CREATE TABLE balances (
    account bigint        NOT NULL,
    bucket  bucket        NOT NULL,
    amount  numeric(30,6) NOT NULL,
    PRIMARY KEY (account, bucket)
);

-- Defence in depth: whatever writes the journal, the database refuses postings that belong
-- to no journal transaction or whose transaction does not sum to zero. One check per INSERT
-- statement over its new rows, not a trigger call per row: a transaction's postings are
-- always inserted by one statement, after the transaction itself.
CREATE FUNCTION postings_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.partition, p.event_seq, sum(p.amount) AS total,
           bool_and(j.event_seq IS NOT NULL) AS recorded
    INTO bad
    FROM new_postings p LEFT JOIN journal_transactions j USING (partition, event_seq)
    GROUP BY p.partition, p.event_seq
    HAVING sum(p.amount) <> 0 OR NOT bool_and(j.event_seq IS NOT NULL)
    LIMIT 1;
    IF FOUND AND NOT bad.recorded THEN
        RAISE EXCEPTION 'postings of %/% belong to no journal transaction',
            bad.partition, bad.event_seq
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'journal transaction %/% does not balance: its postings sum to %',
            bad.partition, bad.event_seq, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER postings_balance AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION postings_must_balance();

-- The journal is append-only: corrections are new transactions, never edits.
CREATE FUNCTION journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER journal_transactions_append_only BEFORE UPDATE OR DELETE ON journal_transactions
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();
