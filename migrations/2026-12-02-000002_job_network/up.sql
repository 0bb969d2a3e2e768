-- A job may ask to reach the network; its sandbox has none unless it asks and the
-- provider's agent offers it (`[sandbox] network = true`).
ALTER TABLE lease_jobs ADD COLUMN network boolean NOT NULL DEFAULT false;
