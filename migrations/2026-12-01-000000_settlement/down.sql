DROP TABLE bridge_cursor, bridge_settlement_txs, bridge_transfers, settlement_payouts,
    settlements, chain_deposits, payout_addresses;
ALTER DOMAIN bucket DROP CONSTRAINT bucket_check;
ALTER DOMAIN bucket ADD CONSTRAINT bucket_check
    CHECK (VALUE IN ('available', 'held', 'in_lease', 'fees', 'external'));
