//! The client against a whole market (`api::testing`): typed answers, and what each kind of
//! refusal becomes, through both transports and on a subscription.

use std::time::Duration;

use api::testing::{Market, T_BUYER};
use api::Limits;
use api_client::mutations::{
    AdminEndLease, AdminEndLeaseVariables, AmendOrder, AmendOrderVariables, CancelOrder,
    CancelOrderVariables, ConfigureMarket, ConfigureMarketVariables, ConfirmSettlement,
    ConfirmSettlementVariables, CreateApiKey, CreateApiKeyVariables, CreateMarket,
    CreateMarketVariables, CreditChainDeposit, CreditChainDepositVariables, CreditDeposit,
    CreditDepositVariables, EndLease, EndLeaseVariables, FailSettlement, FailSettlementVariables,
    OpenSettlement, OpenSettlementVariables, PlaceOrder, PlaceOrderVariables, RequestWithdrawal,
    RequestWithdrawalVariables, SetPayoutAddress, SetPayoutAddressVariables, SubmitJob,
    SubmitJobVariables, SubmitNodeReport, SubmitNodeReportVariables,
};
use api_client::queries::{
    BalanceQuery, DepthQuery, DepthVariables, LeasesQuery, LeasesVariables, MarketsQuery,
    NodeStateQuery, NodeStateVariables, OrdersQuery, OrdersVariables, PendingSettlementQuery,
    RestingOrderQuery, RestingOrderVariables, SettlementDueQuery, SettlementDueVariables,
};
use api_client::subscriptions::MyOrderUpdates;
use api_client::types::{
    AskInput, BidInput, LeaseRole, MarketConfigInput, NodeRefInput, OrderStatus, PlaceOrderInput,
    Role, TimeInForce,
};
use api_client::{
    AsyncClient, Client, ClientError, ErrorCode, Id, MutationBuilder, QueryBuilder,
    SubscriptionBuilder, U64,
};
use rust_decimal::Decimal;

fn create_market() -> CreateMarketVariables {
    CreateMarketVariables {
        market: "H100-80GB".to_owned(),
        tick: "0.01".to_owned(),
        fee_bps: U64(300),
    }
}

fn order(client_order_id: &str, gpus: u64, side: Side) -> PlaceOrderVariables {
    let (bid, ask) = match side {
        Side::Bid => (Some(BidInput::new(U64(1))), None),
        Side::Ask => (
            None,
            Some(AskInput {
                node: "node-a".to_owned(),
                vendor: "nvidia".to_owned(),
                vram_gb: U64(80),
                interconnect: "nvlink".to_owned(),
                region: "eu-west".to_owned(),
                available_until: "2099-01-01T00:00:00Z".parse().unwrap(),
            }),
        ),
    };
    PlaceOrderVariables {
        input: PlaceOrderInput {
            market: "H100-80GB".to_owned(),
            client_order_id: client_order_id.to_owned(),
            price: "2.00".to_owned(),
            gpus: U64(gpus),
            time_in_force: TimeInForce::Gtc,
            bid,
            ask,
        },
    }
}

enum Side {
    Bid,
    Ask,
}

/// The code of a refusal, or what else the error was.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn answers_are_typed_and_refusals_carry_their_code_through_both_transports() {
    let m = Market::start("client_errors", Limits::default());
    let admin = Client::new(&m.url, &m.admin);
    let provider = Client::new(&m.url, &m.provider);
    let buyer = Client::new(&m.url, &m.buyer);

    assert_eq!(
        admin
            .run(&CreateMarket::build(create_market()))
            .unwrap()
            .create_market,
        "H100-80GB"
    );
    assert_eq!(
        refused(admin.run(&CreateMarket::build(create_market()))),
        ErrorCode::MarketExists
    );
    assert_eq!(
        refused(provider.run(&CreateMarket::build(create_market()))),
        ErrorCode::Forbidden
    );
    // The ask's node reports first: asks stand on their node's signed report.
    m.prove_market();
    m.prove_node("node-a", &api::testing::node_a_key(), 8);
    let ask = provider
        .run(&PlaceOrder::build(order("1", 8, Side::Ask)))
        .unwrap()
        .place_order;
    assert_eq!((ask.remaining, ask.fills.len()), (U64(8), 0));
    let depth = buyer
        .run(&DepthQuery::build(DepthVariables {
            market: "H100-80GB".to_owned(),
            levels: U64(1),
        }))
        .unwrap()
        .depth;
    assert_eq!(depth.asks.len(), 1);
    assert_eq!(
        (depth.asks[0].price, depth.asks[0].gpus),
        (Decimal::new(2, 0), U64(8))
    );
    // The engine's rejections.
    assert_eq!(
        refused(buyer.run(&PlaceOrder::build(order("2", 1, Side::Bid)))),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        refused(provider.run(&CancelOrder::build(CancelOrderVariables {
            order_id: Id::new("999"),
        }))),
        ErrorCode::UnknownOrder
    );
    // Refused before execution, with an HTTP error status and the same JSON shape.
    assert_eq!(
        refused(Client::new(&m.url, "gpm_1_notakey").run(&BalanceQuery::build(()))),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        refused(Client::anonymous(&m.url).run(&BalanceQuery::build(()))),
        ErrorCode::Unauthenticated
    );
    let oversized = SubmitNodeReport::build(SubmitNodeReportVariables {
        report: "x".repeat(100 << 10),
        signature: String::new(),
    });
    assert_eq!(
        refused(provider.run(&oversized)),
        ErrorCode::PayloadTooLarge
    );
    // Nothing listens on port 9 (discard) on loopback here.
    let away = Client::new("http://127.0.0.1:9", &m.buyer).run(&BalanceQuery::build(()));
    assert!(
        matches!(away, Err(ClientError::Unreachable { code: None, .. })),
        "{away:?}"
    );

    // The raw escape hatch gives whatever the API said.
    let (status, body) = buyer
        .post_raw("{ balance { nosuchfield } }", serde_json::json!({}))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::parse::<ErrorCode>),
        Some(Ok(ErrorCode::Validation)),
        "{body}"
    );

    // The async transport means the same.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = AsyncClient::new(&m.url, &m.admin);
        let credited = admin
            .run(&CreditDeposit::build(CreditDepositVariables {
                account: Id::new(T_BUYER.to_string()),
                amount: "100".to_owned(),
                idempotency_key: None,
            }))
            .await
            .unwrap()
            .credit_deposit;
        assert_eq!(
            (credited.account, credited.amount),
            (U64(T_BUYER), Decimal::new(100, 0))
        );
        assert_eq!(
            refused(admin.run(&CreateMarket::build(create_market())).await),
            ErrorCode::MarketExists
        );
        let buyer = admin.with_key(&m.buyer);
        let balance = buyer.run(&BalanceQuery::build(())).await.unwrap().balance;
        assert_eq!(balance.available, Decimal::new(100, 0));
    });
}

#[test]
fn a_rate_limit_is_worth_retrying() {
    let m = Market::start(
        "client_rate_limit",
        Limits {
            rate_per_sec: 1,
            burst: 1,
            ..Limits::default()
        },
    );
    let buyer = Client::new(&m.url, &m.buyer);
    let answers: Vec<_> = (0..5)
        .map(|_| buyer.run(&BalanceQuery::build(())))
        .collect();
    assert!(
        answers.iter().any(|a| matches!(
            a,
            Err(ClientError::Unreachable {
                code: Some(ErrorCode::RateLimited),
                ..
            })
        )),
        "{answers:?}"
    );
}

#[test]
fn a_subscription_delivers_typed_updates_and_refusals() {
    let m = Market::start("client_subscriptions", Limits::default());
    let admin = Client::new(&m.url, &m.admin);
    admin.run(&CreateMarket::build(create_market())).unwrap();
    m.prove_market();
    m.prove_node("node-a", &api::testing::node_a_key(), 8);
    admin
        .run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(T_BUYER.to_string()),
            amount: "100".to_owned(),
            idempotency_key: None,
        }))
        .unwrap();
    let buyer = Client::new(&m.url, &m.buyer).with_timeout(Duration::from_secs(10));
    let mut updates = buyer.subscribe(&MyOrderUpdates::build(())).unwrap();
    // Nothing happened yet; meanwhile the server registers the subscription, which it does
    // just after it reads it.
    assert!(updates.next(Duration::from_millis(300)).unwrap().is_none());
    Client::new(&m.url, &m.provider)
        .run(&PlaceOrder::build(order("1", 8, Side::Ask)))
        .unwrap();
    let bid = buyer
        .run(&PlaceOrder::build(order("2", 1, Side::Bid)))
        .unwrap()
        .place_order;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let update = updates
            .next(Duration::from_secs(10))
            .unwrap()
            .expect("an update within 10 s")
            .my_order_updates;
        seen.push((update.order_id, update.change, update.lease_id));
    }
    let lease = bid.fills[0].lease_id;
    assert_eq!(
        seen,
        [
            (bid.order_id, "accepted".to_owned(), None),
            (bid.order_id, "filled".to_owned(), Some(lease)),
        ]
    );

    // A private subscription without a key: the resolver's refusal, with its code.
    let mut anonymous = Client::anonymous(&m.url)
        .subscribe(&MyOrderUpdates::build(()))
        .unwrap();
    assert_eq!(
        refused(anonymous.next(Duration::from_secs(10))),
        ErrorCode::Unauthenticated
    );
    // A key the API refuses at the handshake: the websocket closes saying why, without a
    // code, and that is not worth retrying.
    let rejected = Client::new(&m.url, "gpm_1_notakey").subscribe(&MyOrderUpdates::build(()));
    assert!(
        matches!(rejected, Err(ClientError::Unrecognised { code: None, .. })),
        "{rejected:?}"
    );

    // The API going away ends an open subscription as unreachable: worth subscribing again.
    let stopping = std::thread::spawn(move || drop(m));
    let gone = updates.next(Duration::from_secs(60));
    assert!(
        matches!(gone, Err(ClientError::Unreachable { .. })),
        "{gone:?}"
    );
    stopping.join().unwrap();
}

/// Every operation the callers use answers in its types (ids as `U64`, money as `Decimal`,
/// times as `DateTime`), including the Cosmos bridge's and `gpumarket`'s.
#[test]
fn every_operation_answers_in_its_types() {
    let m = Market::start("client_operations", Limits::default());
    let admin = Client::new(&m.url, &m.admin);
    let provider = Client::new(&m.url, &m.provider);
    let buyer = Client::new(&m.url, &m.buyer);
    admin.run(&CreateMarket::build(create_market())).unwrap();
    m.prove_market();
    m.prove_node("node-a", &api::testing::node_a_key(), 8);
    // `markets` reads the projections.
    m.projected();
    let markets = admin.run(&MarketsQuery::build(())).unwrap().markets;
    assert_eq!(
        (markets[0].id.as_str(), markets[0].fee_bps),
        ("H100-80GB", U64(300))
    );
    assert_eq!(
        (
            markets[0].charge_period_seconds,
            markets[0].heartbeat_timeout_ms,
            markets[0].report_interval_ms
        ),
        (U64(3_600), U64(30_000), U64(10_000)),
        "the defaults"
    );
    let configured = admin
        .run(&ConfigureMarket::build(ConfigureMarketVariables {
            market: "H100-80GB".to_owned(),
            config: MarketConfigInput {
                charge_period_seconds: Some(U64(600)),
                heartbeat_timeout_ms: Some(U64(45_000)),
                // The node's simulated GPUs stay of the class.
                simulated: Some(true),
                model_names: Some(vec![
                    "NVIDIA H100 80GB HBM3".to_owned(),
                    api::testing::SIM_MODEL.to_owned(),
                ]),
                ..MarketConfigInput::default()
            },
        }))
        .unwrap()
        .configure_market;
    assert_eq!(
        (
            configured.charge_period_seconds,
            configured.heartbeat_timeout_ms,
            configured.report_interval_ms,
            configured.model_names
        ),
        (
            U64(600),
            U64(45_000),
            U64(10_000),
            vec![
                "NVIDIA H100 80GB HBM3".to_owned(),
                api::testing::SIM_MODEL.to_owned()
            ]
        )
    );
    assert_eq!(
        refused(admin.run(&ConfigureMarket::build(ConfigureMarketVariables {
            market: "H100-80GB".to_owned(),
            config: MarketConfigInput {
                charge_period_seconds: Some(U64(7)),
                ..MarketConfigInput::default()
            },
        }))),
        ErrorCode::Validation
    );
    m.projected();
    let market = &admin.run(&MarketsQuery::build(())).unwrap().markets[0];
    assert_eq!(
        (market.charge_period_seconds, market.heartbeat_timeout_ms),
        (U64(600), U64(45_000))
    );
    let key = admin
        .run(&CreateApiKey::build(CreateApiKeyVariables {
            role: Role::Trader,
            account: Some(Id::new("77")),
            label: "client test".to_owned(),
        }))
        .unwrap()
        .create_api_key;
    let balance = Client::new(&m.url, &key.key)
        .run(&BalanceQuery::build(()))
        .unwrap()
        .balance;
    assert_eq!(
        (balance.account, balance.available),
        (U64(77), Decimal::ZERO)
    );

    // A deposit from the chain, credited once.
    let deposit = || {
        admin
            .run(&CreditChainDeposit::build(CreditChainDepositVariables {
                account: Id::new(T_BUYER.to_string()),
                amount: "100".to_owned(),
                tx_hash: "AB".repeat(32),
                msg_index: U64(0),
            }))
            .unwrap()
            .credit_chain_deposit
    };
    assert!(!deposit().duplicate);
    assert!(deposit().duplicate);

    let ask = provider
        .run(&PlaceOrder::build(order("1", 4, Side::Ask)))
        .unwrap()
        .place_order;
    let bid = buyer
        .run(&PlaceOrder::build(order("2", 1, Side::Bid)))
        .unwrap()
        .place_order;
    assert_eq!(bid.status, OrderStatus::Filled);
    let lease = bid.fills[0].lease_id;
    let resting = provider
        .run(&RestingOrderQuery::build(RestingOrderVariables {
            id: Id::new(ask.order_id.0.to_string()),
        }))
        .unwrap()
        .resting_order
        .expect("the ask rests");
    assert_eq!((resting.filled, resting.remaining), (U64(1), U64(3)));
    let amended = provider
        .run(&AmendOrder::build(AmendOrderVariables {
            order_id: Id::new(ask.order_id.0.to_string()),
            gpus: Some(U64(3)),
        }))
        .unwrap()
        .amend_order;
    assert_eq!((amended.remaining, amended.priority_kept), (U64(2), true));
    let state = provider
        .run(&NodeStateQuery::build(NodeStateVariables {
            node: "node-a".to_owned(),
            ask: Some(Id::new(ask.order_id.0.to_string())),
        }))
        .unwrap()
        .node_state;
    assert_eq!(state.ask.map(|a| a.remaining), Some(U64(2)));
    assert!(
        buyer
            .run(&SubmitJob::build(SubmitJobVariables {
                lease_id: Id::new(lease.0.to_string()),
                command: "sh".to_owned(),
                args: vec!["-c".to_owned(), "true".to_owned()],
                image: None,
                inputs: Vec::new(),
            }))
            .unwrap()
            .submit_job
    );
    m.projected();
    let orders = provider
        .run(&OrdersQuery::build(OrdersVariables {
            status: Some(OrderStatus::Open),
            first: U64(10),
        }))
        .unwrap()
        .orders
        .nodes;
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (orders[0].side.as_str(), orders[0].node.as_deref()),
        ("ask", Some("node-a"))
    );
    let leases = buyer
        .run(&LeasesQuery::build(LeasesVariables {
            role: LeaseRole::Buyer,
            status: "created".to_owned(),
            first: U64(10),
        }))
        .unwrap()
        .leases
        .nodes;
    assert_eq!(leases.len(), 1);
    assert_eq!(
        leases[0].job.as_ref().map(|j| j.args.clone()),
        Some(vec!["-c".to_owned(), "true".to_owned()])
    );
    let ended = buyer
        .run(&EndLease::build(EndLeaseVariables {
            lease_id: Id::new(lease.0.to_string()),
        }))
        .unwrap()
        .end_lease;
    assert_eq!(
        (ended.lease_id, ended.cause.as_str()),
        (lease, "buyer_stopped")
    );
    assert_eq!(ended.charged_until, ended.ended_at);
    // One GPU at 2.00 for an hour cost 2.00: what was not charged came back.
    assert!(ended.charged > Decimal::ZERO, "{ended:?}");
    assert_eq!(ended.charged + ended.refunded, Decimal::new(2, 0));
    assert_eq!(ended.rebid_order_id, None);
    assert_eq!(
        refused(buyer.run(&EndLease::build(EndLeaseVariables {
            lease_id: Id::new(lease.0.to_string()),
        }))),
        ErrorCode::LeaseEnded
    );
    m.projected();
    let ended_lease = buyer
        .run(&LeasesQuery::build(LeasesVariables {
            role: LeaseRole::Buyer,
            status: "ended".to_owned(),
            first: U64(10),
        }))
        .unwrap()
        .leases
        .nodes;
    assert_eq!(
        (
            ended_lease[0].close_cause.as_deref(),
            ended_lease[0].charged_ms,
            ended_lease[0].charged_until,
            ended_lease[0].bid_order
        ),
        (
            Some("buyer_stopped"),
            Some(ended.charged_ms),
            Some(ended.charged_until),
            bid.order_id
        )
    );

    // The operator ends another lease, with a reason; a bid may carry the options.
    let mut rebidding = order("3", 1, Side::Bid);
    rebidding.input.bid = Some(BidInput {
        rebid_on_failure: true,
        exclude_nodes: vec![NodeRefInput {
            provider: Id::new("99"),
            node: "node-z".to_owned(),
        }],
        ..BidInput::new(U64(1))
    });
    let second = buyer
        .run(&PlaceOrder::build(rebidding))
        .unwrap()
        .place_order;
    let operator = admin
        .run(&AdminEndLease::build(AdminEndLeaseVariables {
            lease_id: Id::new(second.fills[0].lease_id.0.to_string()),
            reason: "maintenance".to_owned(),
        }))
        .unwrap()
        .admin_end_lease;
    assert_eq!(
        (
            operator.lease_id,
            operator.cause.as_str(),
            operator.rebid_order_id
        ),
        (second.fills[0].lease_id, "operator", None),
        "an operator's end is no provider failure: nothing is re-bid"
    );

    // Money commands with an idempotency key move once.
    let credit = |amount: &str| {
        admin.run(&CreditDeposit::build(CreditDepositVariables {
            account: Id::new(T_BUYER.to_string()),
            amount: amount.to_owned(),
            idempotency_key: Some("67e55044-10b1-426f-9247-bb680e5fe0c8".to_owned()),
        }))
    };
    assert!(!credit("5").unwrap().credit_deposit.replayed);
    assert!(credit("5").unwrap().credit_deposit.replayed);
    assert_eq!(refused(credit("6")), ErrorCode::IdempotencyKeyReused);
    // The bridge's side of settlement: nothing is due, so nothing opens.
    assert_eq!(
        admin
            .run(&PendingSettlementQuery::build(()))
            .unwrap()
            .pending_settlement,
        None
    );
    let due = admin
        .run(&SettlementDueQuery::build(SettlementDueVariables {
            min_payout: "1000000".to_owned(),
            max_payouts: U64(10),
        }))
        .unwrap()
        .settlement_due;
    assert_eq!((due.batch, due.lines.len()), (None, 0));
    assert_eq!(
        refused(admin.run(&OpenSettlement::build(OpenSettlementVariables {
            min_payout: "1000000".to_owned(),
            max_payouts: U64(10),
        }))),
        ErrorCode::NothingToSettle
    );
    assert_eq!(
        refused(
            admin.run(&ConfirmSettlement::build(ConfirmSettlementVariables {
                batch: Id::new("9"),
                tx_hash: "CD".repeat(32),
                height: U64(5_000_000_000),
            }))
        ),
        ErrorCode::SettlementNotOpen
    );
    assert_eq!(
        refused(admin.run(&FailSettlement::build(FailSettlementVariables {
            batch: Id::new("9"),
            reason: "test".to_owned(),
        }))),
        ErrorCode::SettlementNotOpen
    );

    // A withdrawal request with a key, retried: requested once.
    buyer
        .run(&SetPayoutAddress::build(SetPayoutAddressVariables {
            address: "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4".to_owned(),
        }))
        .unwrap();
    let withdraw = || {
        buyer
            .run(&RequestWithdrawal::build(RequestWithdrawalVariables {
                amount: "1".to_owned(),
                idempotency_key: Some("9".to_owned()),
            }))
            .unwrap()
            .request_withdrawal
    };
    assert_eq!((withdraw().replayed, withdraw().replayed), (false, true));
    assert_eq!(
        buyer
            .run(&BalanceQuery::build(()))
            .unwrap()
            .balance
            .settling,
        Decimal::new(1, 0)
    );
}
