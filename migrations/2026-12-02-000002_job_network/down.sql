ALTER TABLE lease_jobs DROP COLUMN network;
