-- The read models beside the journal (issue 3/7, second slice): the market's orders, trades,
-- leases and books; billing; provider reputation; net positions. Keys are, as in the journal,
-- places in the log or the engine's own ids (which are per shard, hence `partition`), never
-- sequences, so a rebuild from offset zero reproduces every row.

-- ---------------------------------------------------------------------------------------
-- The `activity` projection: markets, orders, trades, leases, billing.

-- Each projector's latest event time per partition. Invoices close once every partition's
-- clock has passed the end of their period, so a shard that lags cannot add lines to a
-- closed invoice.
CREATE TABLE projection_clocks (
    projector text        NOT NULL,
    partition integer     NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (projector, partition)
);

CREATE TABLE markets (
    market     text          PRIMARY KEY,
    tick       numeric(30,6) NOT NULL,
    fee_bps    integer       NOT NULL,
    partition  integer       NOT NULL,
    event_seq  bigint        NOT NULL,
    created_at timestamptz   NOT NULL
);

CREATE TABLE orders (
    partition     integer       NOT NULL,
    order_id      bigint        NOT NULL,
    account       bigint        NOT NULL,
    -- The client's idempotency key as text: a u128 (or a UUID) does not fit bigint.
    client_id     text          NOT NULL,
    market        text          NOT NULL,
    side          text          NOT NULL CHECK (side IN ('bid', 'ask')),
    price         numeric(30,6) NOT NULL,
    gpus          integer       NOT NULL CHECK (gpus > 0),
    remaining     integer       NOT NULL CHECK (remaining >= 0),
    tif           text          NOT NULL,
    expires_at    timestamptz,
    post_only     boolean       NOT NULL,
    -- A bid's lease length; an ask's node, region and advertised reputation.
    hours         integer,
    node          text,
    region        text,
    reputation    integer       NOT NULL,
    -- What the bid holds when accepted (changes are in order_history).
    hold          numeric(30,6) NOT NULL,
    status        text          NOT NULL CHECK (status IN ('open', 'filled', 'cancelled')),
    cancel_reason text,
    created_at    timestamptz   NOT NULL,
    updated_at    timestamptz   NOT NULL,
    updated_seq   bigint        NOT NULL,
    PRIMARY KEY (partition, order_id)
);
CREATE INDEX orders_by_account ON orders (account, created_at);
-- The books: open orders by market, side and price (top of book, depth).
CREATE INDEX orders_open_by_price ON orders (market, side, price) WHERE status = 'open';

-- Every change of every order, in log order: accepted, filled (one row per fill), amended,
-- cancelled.
CREATE TABLE order_history (
    partition integer       NOT NULL,
    event_seq bigint        NOT NULL,
    order_id  bigint        NOT NULL,
    change    text          NOT NULL CHECK (change IN ('accepted', 'filled', 'amended', 'cancelled')),
    -- accepted and amended: the order's price; filled: the trade's price; cancelled: none.
    price     numeric(30,6),
    remaining integer       NOT NULL,
    -- filled: the GPUs of the fill; amended: the hold change; cancelled: the reason.
    detail    text,
    at        timestamptz   NOT NULL,
    PRIMARY KEY (partition, order_id, event_seq)
);

-- One trade per fill; a fill creates exactly one lease, so the lease id is the trade id.
CREATE TABLE trades (
    partition integer       NOT NULL,
    lease_id  bigint        NOT NULL,
    event_seq bigint        NOT NULL,
    market    text          NOT NULL,
    price     numeric(30,6) NOT NULL,
    gpus      integer       NOT NULL,
    hours     integer       NOT NULL,
    buyer     bigint        NOT NULL,
    provider  bigint        NOT NULL,
    bid_order bigint        NOT NULL,
    ask_order bigint        NOT NULL,
    taker     text          NOT NULL CHECK (taker IN ('bid', 'ask')),
    at        timestamptz   NOT NULL,
    PRIMARY KEY (partition, lease_id)
);
CREATE INDEX trades_by_market ON trades (market, at);

CREATE TABLE leases (
    partition       integer       NOT NULL,
    lease_id        bigint        NOT NULL,
    market          text          NOT NULL,
    buyer           bigint        NOT NULL,
    provider        bigint        NOT NULL,
    node            text          NOT NULL,
    -- The ask's region (the event does not repeat it).
    region          text          NOT NULL,
    bid_order       bigint        NOT NULL,
    ask_order       bigint        NOT NULL,
    gpus            integer       NOT NULL,
    price           numeric(30,6) NOT NULL,
    hours           integer       NOT NULL,
    cost            numeric(30,6) NOT NULL,
    status          text          NOT NULL CHECK (status IN ('created', 'running', 'ended')),
    created_at      timestamptz   NOT NULL,
    started_at      timestamptz,
    start_delay_ms  bigint,
    ended_at        timestamptz,
    hours_used      numeric(20,6),
    charged         numeric(30,6),
    fee             numeric(30,6),
    provider_earned numeric(30,6),
    refunded        numeric(30,6),
    end_reason      text,
    PRIMARY KEY (partition, lease_id)
);
CREATE INDEX leases_by_buyer ON leases (buyer, created_at);
CREATE INDEX leases_by_provider ON leases (provider, created_at);

-- Billing: one usage line per ended lease, the unit of the FOCUS export. `period` is the
-- month (UTC) the charge falls in.
CREATE TABLE usage_lines (
    partition       integer       NOT NULL,
    lease_id        bigint        NOT NULL,
    event_seq       bigint        NOT NULL,
    command_offset  bigint        NOT NULL,
    account         bigint        NOT NULL,
    provider        bigint        NOT NULL,
    market          text          NOT NULL,
    node            text          NOT NULL,
    region          text          NOT NULL,
    gpus            integer       NOT NULL,
    hours_used      numeric(20,6) NOT NULL,
    gpu_hours       numeric(30,6) NOT NULL,
    unit_price      numeric(30,6) NOT NULL,
    -- What the buyer pays (the lease's charge); the fee and the provider's part of it.
    amount          numeric(30,6) NOT NULL,
    fee             numeric(30,6) NOT NULL,
    provider_earned numeric(30,6) NOT NULL,
    -- What the lease had paid in and what went back.
    list_cost       numeric(30,6) NOT NULL,
    refunded        numeric(30,6) NOT NULL,
    end_reason      text          NOT NULL,
    charge_start    timestamptz   NOT NULL,
    charge_end      timestamptz   NOT NULL,
    period          date          NOT NULL,
    PRIMARY KEY (partition, lease_id)
);
CREATE INDEX usage_lines_by_end ON usage_lines (charge_end);
CREATE INDEX usage_lines_by_account ON usage_lines (account, period);

-- A buyer's invoice per month: the sum of its usage lines. Open while the month runs,
-- closed once every partition's clock passed the month's end.
CREATE TABLE invoices (
    account   bigint        NOT NULL,
    period    date          NOT NULL,
    status    text          NOT NULL CHECK (status IN ('open', 'closed')),
    lines     integer       NOT NULL,
    gpu_hours numeric(30,6) NOT NULL,
    amount    numeric(30,6) NOT NULL,
    PRIMARY KEY (account, period)
);

-- A provider's earnings per month, the other side of the invoices.
CREATE TABLE earnings (
    provider  bigint        NOT NULL,
    period    date          NOT NULL,
    leases    integer       NOT NULL,
    gpu_hours numeric(30,6) NOT NULL,
    gross     numeric(30,6) NOT NULL,
    fees      numeric(30,6) NOT NULL,
    net       numeric(30,6) NOT NULL,
    PRIMARY KEY (provider, period)
);

-- The best bid and ask of each market with the GPUs at that price, from the open orders.
CREATE VIEW top_of_book AS
SELECT m.market,
       b.price AS best_bid, b.gpus AS bid_gpus, b.orders AS bid_orders,
       a.price AS best_ask, a.gpus AS ask_gpus, a.orders AS ask_orders
FROM markets m
LEFT JOIN LATERAL (
    SELECT price, sum(remaining)::bigint AS gpus, count(*)::integer AS orders
    FROM orders
    WHERE market = m.market AND side = 'bid' AND status = 'open'
    GROUP BY price ORDER BY price DESC LIMIT 1
) b ON true
LEFT JOIN LATERAL (
    SELECT price, sum(remaining)::bigint AS gpus, count(*)::integer AS orders
    FROM orders
    WHERE market = m.market AND side = 'ask' AND status = 'open'
    GROUP BY price ORDER BY price LIMIT 1
) a ON true;

-- ---------------------------------------------------------------------------------------
-- The `reputation` projection.

-- Each node a provider advertised or reported: what its asks claim and what its agent says.
CREATE TABLE nodes (
    provider          bigint      NOT NULL,
    node              text        NOT NULL,
    advertised_class  text,
    advertised_gpus   integer,
    reported_class    text,
    reported_gpus     integer,
    first_heartbeat   timestamptz,
    last_heartbeat    timestamptz,
    heartbeats        bigint      NOT NULL,
    up_ms             bigint      NOT NULL,
    down_ms           bigint      NOT NULL,
    mismatching       boolean     NOT NULL,
    mismatches        integer     NOT NULL,
    PRIMARY KEY (provider, node)
);

-- The components of each provider's score and the score (see migrations/README.md for the
-- formula); `engine_score` is the score the engine last applied to its asks.
CREATE TABLE provider_reputation (
    provider         bigint      PRIMARY KEY,
    leases_completed integer     NOT NULL,
    leases_failed    integer     NOT NULL,
    leases_stopped   integer     NOT NULL,
    starts           integer     NOT NULL,
    starts_on_time   integer     NOT NULL,
    start_delay_ms   bigint      NOT NULL,
    up_ms            bigint      NOT NULL,
    down_ms          bigint      NOT NULL,
    spec_mismatches  integer     NOT NULL,
    completion       double precision NOT NULL,
    uptime           double precision NOT NULL,
    punctuality      double precision NOT NULL,
    integrity        double precision NOT NULL,
    score            integer     NOT NULL CHECK (score BETWEEN 0 AND 1000),
    engine_score     integer,
    updated_at       timestamptz NOT NULL
);

-- Why a score is what it is: a row for every event that changed a provider's counts other
-- than a routine heartbeat, and for every heartbeat that moved the score.
CREATE TABLE reputation_history (
    partition   integer     NOT NULL,
    event_seq   bigint      NOT NULL,
    provider    bigint      NOT NULL,
    at          timestamptz NOT NULL,
    cause       text        NOT NULL,
    completion  double precision NOT NULL,
    uptime      double precision NOT NULL,
    punctuality double precision NOT NULL,
    integrity   double precision NOT NULL,
    score       integer     NOT NULL,
    PRIMARY KEY (provider, partition, event_seq)
);

-- ---------------------------------------------------------------------------------------
-- Net positions, kept by the journal projection in its own transaction: per account, what
-- crossed the market's edge and what the account earned and spent since the last
-- settlement. Settlement (the Cosmos bridge) starts a new window by moving
-- `settled_through`; until then the window is the whole history.
CREATE TABLE net_positions (
    account          bigint        PRIMARY KEY,
    deposits         numeric(30,6) NOT NULL,
    withdrawals      numeric(30,6) NOT NULL,
    earnings         numeric(30,6) NOT NULL,
    usage_charges    numeric(30,6) NOT NULL,
    fees             numeric(30,6) NOT NULL,
    -- withdrawals − deposits: what the escrow owes this account on chain for the window
    -- (negative: the market received more from it than it paid out).
    net_payable      numeric(30,6) NOT NULL,
    settled_through  bigint        NOT NULL DEFAULT 0
);

-- The exports read the journal by time.
CREATE INDEX journal_transactions_by_time ON journal_transactions (at, partition, event_seq);

-- ---------------------------------------------------------------------------------------
-- The journal keeps each transaction's legs in its own row, as three parallel arrays, and
-- `postings` becomes a view of them. One row per transaction instead of one per leg made the
-- journal projector about twice as fast (Postgres's cost is per row and per index entry);
-- the legs of a transaction were only ever written together anyway.

ALTER TABLE journal_transactions
    ADD COLUMN accounts bigint[],
    ADD COLUMN buckets  text[],
    ADD COLUMN amounts  numeric(30,6)[];

ALTER TABLE journal_transactions DISABLE TRIGGER journal_transactions_append_only;
UPDATE journal_transactions j
SET accounts = p.accounts, buckets = p.buckets, amounts = p.amounts
FROM (SELECT partition, event_seq,
             array_agg(account ORDER BY leg) AS accounts,
             array_agg(bucket::text ORDER BY leg) AS buckets,
             array_agg(amount ORDER BY leg) AS amounts
      FROM postings GROUP BY partition, event_seq) p
WHERE j.partition = p.partition AND j.event_seq = p.event_seq;
ALTER TABLE journal_transactions ENABLE TRIGGER journal_transactions_append_only;

ALTER TABLE journal_transactions
    ALTER COLUMN accounts SET NOT NULL,
    ALTER COLUMN buckets SET NOT NULL,
    ALTER COLUMN amounts SET NOT NULL;

DROP TABLE postings;
DROP FUNCTION postings_must_balance();

-- Defence in depth, as before: whatever writes the journal, the database refuses a
-- transaction whose legs do not line up, name an unknown bucket, post a zero, or do not sum
-- to zero. One check per statement over its new rows (a CHECK calling a function per row
-- cost more than the insert itself).
CREATE FUNCTION journal_must_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.partition, n.event_seq, (SELECT sum(x) FROM unnest(n.amounts) x) AS total
    INTO bad
    FROM new_transactions n
    WHERE cardinality(n.accounts) < 2
       OR cardinality(n.buckets) <> cardinality(n.accounts)
       OR cardinality(n.amounts) <> cardinality(n.accounts)
       OR NOT n.buckets <@ ARRAY['available', 'held', 'in_lease', 'fees', 'external']
       OR 0 = ANY (n.amounts)
       OR (SELECT sum(x) FROM unnest(n.amounts) x) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal transaction %/% does not balance: its legs sum to % or are malformed',
            bad.partition, bad.event_seq, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER journal_balance AFTER INSERT ON journal_transactions
    REFERENCING NEW TABLE AS new_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION journal_must_balance();

-- The legs as rows, for people and tools that expect a postings table.
CREATE VIEW postings AS
SELECT j.partition, j.event_seq, (l.leg - 1)::smallint AS leg, l.account, l.bucket, l.amount
FROM journal_transactions j
CROSS JOIN LATERAL unnest(j.accounts, j.buckets, j.amounts) WITH ORDINALITY
    AS l(account, bucket, amount, leg);
