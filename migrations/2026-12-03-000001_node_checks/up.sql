-- Checker jobs: each verdict of a market's checker on a node it tested (a known-answer job
-- on a lease it bought), as `NodeChecked` states it. Public: buyers read a provider's
-- checks before they buy from it. A failed check's slash is in `slashes` (its lease).
CREATE TABLE node_checks (
    partition integer     NOT NULL,
    event_seq bigint      NOT NULL,
    market    text        NOT NULL,
    provider  bigint      NOT NULL,
    node      text        NOT NULL,
    lease_id  bigint      NOT NULL UNIQUE,
    checker   bigint      NOT NULL,
    passed    boolean     NOT NULL,
    detail    text        NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (partition, event_seq)
);
CREATE INDEX node_checks_provider ON node_checks (provider, at);
-- The checker loop reads each node's latest verdict in a market.
CREATE INDEX node_checks_latest ON node_checks (market, provider, node, at DESC, event_seq DESC);
