-- What a buyer wants run on a lease (issue 5/7): the provider's agent reads it and runs it on
-- the leased GPUs. One per lease, never replaced: the agent may already be running it.
CREATE TABLE lease_jobs (
    partition    integer     NOT NULL,
    lease_id     bigint      NOT NULL,
    buyer        bigint      NOT NULL,
    provider     bigint      NOT NULL,
    command      text        NOT NULL CHECK (command <> ''),
    args         text[]      NOT NULL,
    -- Environment as parallel name/value arrays, in the order given.
    env_names    text[]      NOT NULL,
    env_values   text[]      NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    -- The end of the job's output as the provider's agent last sent it (the whole log stays
    -- on the node), and how the job ended.
    log_tail     text        NOT NULL DEFAULT '',
    outcome      text,
    log_at       timestamptz,
    PRIMARY KEY (partition, lease_id)
);
CREATE INDEX lease_jobs_by_provider ON lease_jobs (provider, lease_id);
