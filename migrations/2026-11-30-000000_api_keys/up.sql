-- API keys (issue 4/7). A key is `gpm_{id}_{secret}`: the id finds the row, the secret is
-- checked against its argon2id hash. The secret itself is shown once, at creation, and
-- never stored.
CREATE TABLE api_keys (
    id          bigserial   PRIMARY KEY,
    role        text        NOT NULL CHECK (role IN ('trader', 'provider', 'finance', 'admin')),
    -- The market account a trader or provider acts as; finance and admin act as none.
    account     bigint      CHECK ((role IN ('trader', 'provider')) = (account IS NOT NULL)),
    label       text        NOT NULL,
    secret_hash text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_by_account ON api_keys (account) WHERE revoked_at IS NULL;
