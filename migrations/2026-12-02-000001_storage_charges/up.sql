-- Storage charges (issue 18): where the market prices storage, each account's blobs are
-- charged hour by hour (`StorageCharged`), and its monthly invoice shows them as their own
-- line beside the GPU usage.
CREATE TABLE storage_charges (
    partition integer       NOT NULL,
    event_seq bigint        NOT NULL,
    account   bigint        NOT NULL,
    hour      timestamptz   NOT NULL,
    bytes     bigint        NOT NULL CHECK (bytes >= 0),
    amount    numeric(30,6) NOT NULL CHECK (amount >= 0),
    unpaid    numeric(30,6) NOT NULL CHECK (unpaid >= 0),
    period    date          NOT NULL,
    PRIMARY KEY (partition, event_seq)
);
CREATE INDEX storage_charges_by_account ON storage_charges (account, hour);

ALTER TABLE invoices
    ADD COLUMN storage_gb_hours numeric(30,6) NOT NULL DEFAULT 0,
    ADD COLUMN storage_amount   numeric(30,6) NOT NULL DEFAULT 0,
    ADD COLUMN storage_unpaid   numeric(30,6) NOT NULL DEFAULT 0;
