-- Blobs named by content (issue 18): the bytes live in the blob store (object_store, under
-- `blobs/<cid>`); these tables say which exist, who refers to them, and what each job read
-- and wrote. A row in `blobs` is written only after the store holds the whole object.
CREATE TABLE blobs (
    cid       text        PRIMARY KEY CHECK (cid ~ '^bafkrei[a-z2-7]{52}$'),
    size      bigint      NOT NULL CHECK (size >= 0),
    stored_at timestamptz NOT NULL DEFAULT now()
);

-- An account's hold on a blob: what it uploaded, or what a job on its lease wrote (owned by
-- the lease's buyer, uploaded by the provider's agent). Quotas count these; deleting the
-- last reference deletes the bytes.
CREATE TABLE blob_refs (
    owner      bigint      NOT NULL,
    cid        text        NOT NULL REFERENCES blobs (cid),
    kind       text        NOT NULL CHECK (kind IN ('upload', 'output')),
    lease_id   bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, cid)
);
CREATE INDEX blob_refs_by_cid ON blob_refs (cid);

-- Per account: the most bytes its references may add up to (NULL: the market's default), and
-- how long they are kept (NULL: until deleted, the default).
CREATE TABLE blob_quotas (
    owner          bigint  PRIMARY KEY,
    max_bytes      bigint  CHECK (max_bytes >= 0),
    retention_days integer CHECK (retention_days > 0)
);

-- A job's environment and inputs by digest (the provider may read exactly these while the
-- lease runs), and its outputs: the manifest (path -> digest, size) and the whole log, as the
-- node's signed report named them.
ALTER TABLE lease_jobs
    ADD COLUMN image           text,
    ADD COLUMN image_blobs     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN input_cids      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN input_paths     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN output_manifest text,
    ADD COLUMN output_log      text,
    ADD COLUMN report_sequence bigint;
