ALTER TABLE provider_reputation DROP COLUMN slashes;
DROP TABLE node_flags, slashes, bond_movements;
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
