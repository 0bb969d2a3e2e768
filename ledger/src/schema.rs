//! The tables the migrations create, for diesel's query builder. Kept by hand, in step with
//! `migrations/`; the `bucket` domain is text underneath.

diesel::table! {
    projector_offsets (projector, topic, partition) {
        projector -> Text,
        topic -> Text,
        partition -> Integer,
        next_offset -> BigInt,
    }
}

diesel::table! {
    journal_transactions (partition, event_seq) {
        partition -> Integer,
        event_seq -> BigInt,
        command_offset -> BigInt,
        kind -> Text,
        at -> Timestamptz,
        accounts -> Array<BigInt>,
        buckets -> Array<Text>,
        amounts -> Array<Numeric>,
    }
}

diesel::table! {
    /// A view: the legs of `journal_transactions` as rows.
    postings (partition, event_seq, leg) {
        partition -> Integer,
        event_seq -> BigInt,
        leg -> SmallInt,
        account -> BigInt,
        bucket -> Text,
        amount -> Numeric,
    }
}

diesel::table! {
    balances (account, bucket) {
        account -> BigInt,
        bucket -> Text,
        amount -> Numeric,
    }
}

diesel::table! {
    projection_clocks (projector, partition) {
        projector -> Text,
        partition -> Integer,
        at -> Timestamptz,
    }
}

diesel::table! {
    markets (market) {
        market -> Text,
        tick -> Numeric,
        fee_bps -> Integer,
        partition -> Integer,
        event_seq -> BigInt,
        created_at -> Timestamptz,
        charge_period_s -> Integer,
        heartbeat_timeout_ms -> Integer,
        config -> Nullable<Jsonb>,
        configured_seq -> Nullable<BigInt>,
        configured_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    orders (partition, order_id) {
        partition -> Integer,
        order_id -> BigInt,
        account -> BigInt,
        client_id -> Text,
        market -> Text,
        side -> Text,
        price -> Numeric,
        gpus -> Integer,
        remaining -> Integer,
        tif -> Text,
        expires_at -> Nullable<Timestamptz>,
        post_only -> Bool,
        hours -> Nullable<Integer>,
        node -> Nullable<Text>,
        region -> Nullable<Text>,
        reputation -> Integer,
        hold -> Numeric,
        status -> Text,
        cancel_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        updated_seq -> BigInt,
    }
}

diesel::table! {
    order_history (partition, order_id, event_seq) {
        partition -> Integer,
        event_seq -> BigInt,
        order_id -> BigInt,
        change -> Text,
        price -> Nullable<Numeric>,
        remaining -> Integer,
        detail -> Nullable<Text>,
        at -> Timestamptz,
    }
}

diesel::table! {
    trades (partition, lease_id) {
        partition -> Integer,
        lease_id -> BigInt,
        event_seq -> BigInt,
        market -> Text,
        price -> Numeric,
        gpus -> Integer,
        hours -> Integer,
        buyer -> BigInt,
        provider -> BigInt,
        bid_order -> BigInt,
        ask_order -> BigInt,
        taker -> Text,
        at -> Timestamptz,
    }
}

diesel::table! {
    leases (partition, lease_id) {
        partition -> Integer,
        lease_id -> BigInt,
        market -> Text,
        buyer -> BigInt,
        provider -> BigInt,
        node -> Text,
        region -> Text,
        bid_order -> BigInt,
        ask_order -> BigInt,
        gpus -> Integer,
        price -> Numeric,
        hours -> Integer,
        cost -> Numeric,
        status -> Text,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        start_delay_ms -> Nullable<BigInt>,
        ended_at -> Nullable<Timestamptz>,
        hours_used -> Nullable<Numeric>,
        charged -> Nullable<Numeric>,
        fee -> Nullable<Numeric>,
        provider_earned -> Nullable<Numeric>,
        refunded -> Nullable<Numeric>,
        end_reason -> Nullable<Text>,
        close_cause -> Nullable<Text>,
        close_detail -> Nullable<Text>,
        charged_until -> Nullable<Timestamptz>,
        charged_ms -> Nullable<BigInt>,
        closed_seq -> Nullable<BigInt>,
        rebid_order -> Nullable<BigInt>,
        rebid_refused -> Nullable<Text>,
        payment_held_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    usage_lines (partition, lease_id, charge_start) {
        partition -> Integer,
        lease_id -> BigInt,
        event_seq -> BigInt,
        command_offset -> BigInt,
        account -> BigInt,
        provider -> BigInt,
        market -> Text,
        node -> Text,
        region -> Text,
        gpus -> Integer,
        hours_used -> Numeric,
        gpu_hours -> Numeric,
        unit_price -> Numeric,
        amount -> Numeric,
        fee -> Numeric,
        provider_earned -> Numeric,
        list_cost -> Numeric,
        refunded -> Nullable<Numeric>,
        end_reason -> Nullable<Text>,
        charge_start -> Timestamptz,
        charge_end -> Timestamptz,
        period -> Date,
        usage_start -> Timestamptz,
        usage_end -> Timestamptz,
        settled_seq -> Nullable<BigInt>,
        settled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    invoices (account, period) {
        account -> BigInt,
        period -> Date,
        status -> Text,
        lines -> Integer,
        gpu_hours -> Numeric,
        amount -> Numeric,
        storage_gb_hours -> Numeric,
        storage_amount -> Numeric,
        storage_unpaid -> Numeric,
    }
}

diesel::table! {
    earnings (provider, period) {
        provider -> BigInt,
        period -> Date,
        leases -> Integer,
        gpu_hours -> Numeric,
        gross -> Numeric,
        fees -> Numeric,
        net -> Numeric,
    }
}

diesel::table! {
    nodes (provider, node) {
        provider -> BigInt,
        node -> Text,
        advertised_class -> Nullable<Text>,
        advertised_gpus -> Nullable<Integer>,
        reported_class -> Nullable<Text>,
        reported_gpus -> Nullable<Integer>,
        first_heartbeat -> Nullable<Timestamptz>,
        last_heartbeat -> Nullable<Timestamptz>,
        heartbeats -> BigInt,
        up_ms -> BigInt,
        down_ms -> BigInt,
        mismatching -> Bool,
        mismatches -> Integer,
        silent_through -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    provider_reputation (provider) {
        provider -> BigInt,
        leases_completed -> Integer,
        leases_failed -> Integer,
        leases_stopped -> Integer,
        starts -> Integer,
        starts_on_time -> Integer,
        start_delay_ms -> BigInt,
        up_ms -> BigInt,
        down_ms -> BigInt,
        spec_mismatches -> Integer,
        slashes -> Integer,
        completion -> Double,
        uptime -> Double,
        punctuality -> Double,
        integrity -> Double,
        score -> Integer,
        engine_score -> Nullable<Integer>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reputation_history (provider, partition, event_seq) {
        partition -> Integer,
        event_seq -> BigInt,
        provider -> BigInt,
        at -> Timestamptz,
        cause -> Text,
        completion -> Double,
        uptime -> Double,
        punctuality -> Double,
        integrity -> Double,
        score -> Integer,
    }
}

diesel::table! {
    net_positions (account) {
        account -> BigInt,
        deposits -> Numeric,
        withdrawals -> Numeric,
        earnings -> Numeric,
        usage_charges -> Numeric,
        fees -> Numeric,
        net_payable -> Numeric,
        settled_through -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    journal_transactions,
    postings,
    balances,
    markets,
    orders,
    order_history,
    trades,
    leases,
    usage_lines,
    invoices,
    earnings,
    nodes,
    provider_reputation,
    reputation_history,
    net_positions,
);
