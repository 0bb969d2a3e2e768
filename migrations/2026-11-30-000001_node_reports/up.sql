-- Signed reports from provider agents (issue 4/7): each node's ed25519 public key, the
-- reports received (their sequence numbers make a replayed report harmless), and the GPU
-- samples they carried.

CREATE TABLE node_keys (
    provider      bigint      NOT NULL,
    node          text        NOT NULL,
    public_key    bytea       NOT NULL CHECK (length(public_key) = 32),
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, node)
);

CREATE TABLE node_reports (
    provider    bigint      NOT NULL,
    node        text        NOT NULL,
    -- The agent numbers its reports; one already received is acknowledged, not applied.
    sequence    bigint      NOT NULL CHECK (sequence >= 0),
    at          timestamptz NOT NULL,
    class       text        NOT NULL,
    gpus        integer     NOT NULL,
    -- Whether the agent read real hardware or its simulated source.
    simulated   boolean     NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, node, sequence)
);

-- One row per GPU per report. A capability the agent could not read is NULL, never zero.
CREATE TABLE gpu_samples (
    provider        bigint      NOT NULL,
    node            text        NOT NULL,
    sequence        bigint      NOT NULL,
    gpu             integer     NOT NULL,
    at              timestamptz NOT NULL,
    name            text        NOT NULL,
    uuid            text        NOT NULL,
    utilisation_pct real,
    memory_used_mb  bigint,
    memory_total_mb bigint,
    temperature_c   real,
    power_w         real,
    power_limit_w   real,
    sm_clock_mhz    integer,
    ecc_errors      bigint,
    PRIMARY KEY (provider, node, sequence, gpu)
);
CREATE INDEX gpu_samples_by_time ON gpu_samples (provider, node, at);
