DROP TABLE lease_jobs;
