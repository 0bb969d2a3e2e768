DROP TABLE balances;
DROP TABLE postings;
DROP TABLE journal_transactions;
DROP FUNCTION journal_is_append_only();
DROP FUNCTION postings_must_balance();
DROP DOMAIN bucket;
DROP TABLE projector_offsets;
