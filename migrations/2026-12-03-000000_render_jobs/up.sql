-- Render jobs (issue 19): a scene's frames split across providers and checked by rendering
-- a share again elsewhere. The API's render loop drives each job: it buys leases as the
-- buyer, gives them frame jobs (`lease_jobs`), compares the frames it gets back and ends the
-- leases. `state` is the job's coordinator (`render::Coordinator`, JSON), rewritten whole by
-- the loop in one statement that also moves `version`, so two loops never both advance it.
CREATE TABLE render_jobs (
    id           bigserial   PRIMARY KEY,
    buyer        bigint      NOT NULL,
    -- The buyer's own name for the job: submitting it again returns the same job.
    client_id    text        NOT NULL CHECK (client_id <> ''),
    -- What to render (`render::RenderSpec`) and how to buy its GPUs (`render::Purchase`).
    spec         text        NOT NULL,
    purchase     text        NOT NULL,
    state        text        NOT NULL,
    version      bigint      NOT NULL DEFAULT 0,
    status       text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    UNIQUE (buyer, client_id)
);
CREATE INDEX render_jobs_running ON render_jobs (id) WHERE status = 'running';

-- The GPUs a job ran on, as the node's signed report that sealed its outputs named them.
ALTER TABLE lease_jobs ADD COLUMN output_gpus text[] NOT NULL DEFAULT '{}';
