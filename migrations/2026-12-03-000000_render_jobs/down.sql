ALTER TABLE lease_jobs DROP COLUMN output_gpus;
DROP TABLE render_jobs;
