ALTER TABLE invoices
    DROP COLUMN storage_unpaid,
    DROP COLUMN storage_amount,
    DROP COLUMN storage_gb_hours;
DROP TABLE storage_charges;
