ALTER TABLE leases DROP COLUMN payment_held_until;
