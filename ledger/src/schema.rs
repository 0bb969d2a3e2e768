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
    }
}

diesel::table! {
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
