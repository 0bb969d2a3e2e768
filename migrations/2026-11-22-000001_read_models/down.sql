-- The legs go back into rows of their own.
DROP VIEW postings;
DROP TRIGGER journal_balance ON journal_transactions;
DROP FUNCTION journal_must_balance();
CREATE TABLE postings (
    partition integer       NOT NULL,
    event_seq bigint        NOT NULL,
    leg       smallint      NOT NULL,
    account   bigint        NOT NULL,
    bucket    bucket        NOT NULL,
    amount    numeric(30,6) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (partition, event_seq, leg)
);
INSERT INTO postings
SELECT j.partition, j.event_seq, (l.leg - 1)::smallint, l.account, l.bucket, l.amount
FROM journal_transactions j
CROSS JOIN LATERAL unnest(j.accounts, j.buckets, j.amounts) WITH ORDINALITY
    AS l(account, bucket, amount, leg);
ALTER TABLE journal_transactions DISABLE TRIGGER journal_transactions_append_only;
ALTER TABLE journal_transactions DROP COLUMN accounts, DROP COLUMN buckets, DROP COLUMN amounts;
ALTER TABLE journal_transactions ENABLE TRIGGER journal_transactions_append_only;
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
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION journal_is_append_only();

DROP INDEX journal_transactions_by_time;
DROP TABLE net_positions;
DROP TABLE reputation_history;
DROP TABLE provider_reputation;
DROP TABLE nodes;
DROP VIEW top_of_book;
DROP TABLE earnings;
DROP TABLE invoices;
DROP TABLE usage_lines;
DROP TABLE leases;
DROP TABLE trades;
DROP TABLE order_history;
DROP TABLE orders;
DROP TABLE markets;
DROP TABLE projection_clocks;
