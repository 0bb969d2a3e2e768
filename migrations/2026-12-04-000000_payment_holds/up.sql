-- Payment held for review: the latest moment a lease's payment, held by its buyer when it
-- stopped the lease (`PaymentHeld`), is paid. Set while the payment waits and kept after;
-- `charged` fills in when it is paid (or the work rejected).
ALTER TABLE leases ADD COLUMN payment_held_until timestamptz;
