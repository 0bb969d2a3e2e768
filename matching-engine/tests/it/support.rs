//! Given/when/then for the engine: `Scenario::given(commands).when(command)` returns the
//! outcome, and the `then_*` checks read like the rule under test.

pub use contract::ErrorCode;
use contract::{
    AccountId, Amount, AskSpec, BidSpec, CancelReason, ChargePeriod, ClientOrderId, Command, Event,
    FeeRate, GpuStatus, Gpus, Hours, Interconnect, LeaseEndReason, LeaseId, MarketConfig,
    MarketConfigFields, MarketId, NewOrder, NodeId, NodeKey, NodeRef, OrderId, OrderOptions,
    OrderTerms, Price, Region, Rejection, ReportEvidence, Reputation, ShortText, Signature,
    SignedHeartbeat, TimeInForce, Timestamp, TxHash, Vendor,
};
use matching_engine::Engine;
use rust_decimal::Decimal;

pub const T0: i64 = 1_700_000_000_000;
pub const HOUR: i64 = Timestamp::MS_PER_HOUR;
pub const BUYER: AccountId = AccountId(1);
pub const BUYER2: AccountId = AccountId(2);
pub const PROVIDER: AccountId = AccountId(11);
pub const PROVIDER2: AccountId = AccountId(12);

pub fn h100() -> MarketId {
    MarketId::parse("H100-80GB").unwrap()
}

pub fn px(s: &str) -> Price {
    Price::parse(s).unwrap()
}

pub fn amt(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

pub fn region(s: &str) -> Region {
    Region::parse(s).unwrap()
}

/// An amount as `Engine::total_money` counts it.
pub fn micros(s: &str) -> i128 {
    amt(s).micros().into()
}

/// The most one account can hold: `i64::MAX` micro-units.
pub const MAX: &str = "9223372036854.775807";
/// More than half of [`MAX`]: two of them do not fit one account.
pub const BIG: &str = "5000000000000";

pub fn deposit(account: AccountId, amount: &str) -> Command {
    Command::Deposit {
        account,
        amount: amt(amount),
    }
}

/// Message 0 of transaction `[tx; 32]`.
pub fn chain_deposit(account: AccountId, amount: &str, tx: u8) -> Command {
    Command::ChainDeposit {
        account,
        amount: amt(amount),
        tx_hash: TxHash([tx; 32]),
        msg_index: 0,
    }
}

pub fn end(by: AccountId, lease: u64, hours_used: &str) -> Command {
    Command::EndLease {
        by,
        lease_id: LeaseId(lease),
        hours_used: hours_used.parse::<Decimal>().unwrap(),
        reason: LeaseEndReason::BuyerStopped,
    }
}

/// Two markets on a one-micro-unit tick, so that any amount is a price: `H100-80GB` takes
/// no fee, `MI300X-192GB` takes all of every charge.
pub fn limit_markets() -> Vec<Command> {
    [("H100-80GB", 0), ("MI300X-192GB", 10_000)]
        .map(|(market, fee)| Command::CreateMarket {
            market: MarketId::parse(market).unwrap(),
            tick: px("0.000001"),
            fee: FeeRate::new(fee).unwrap(),
        })
        .into()
}

/// A market with tick 0.01 and a 10% fee, and two buyers with 1,000 each.
pub fn market_with_buyers() -> Vec<Command> {
    vec![
        Command::CreateMarket {
            market: h100(),
            tick: px("0.01"),
            fee: FeeRate::new(1_000).unwrap(),
        },
        deposit(BUYER, "1000"),
        deposit(BUYER2, "1000"),
    ]
}

/// The heartbeat timeout of [`metered_market`]: a report a minute, three minutes' grace.
pub const TIMEOUT: i64 = 180_000;

/// [`market_with_buyers`], configured with hourly charge periods, a report a minute and
/// [`TIMEOUT`].
pub fn metered_market() -> Vec<Command> {
    let mut commands = market_with_buyers();
    commands.push(configure(3_600, 60_000, TIMEOUT as u32));
    commands
}

pub fn configure(period_s: u32, report_interval_ms: u32, heartbeat_timeout_ms: u32) -> Command {
    Command::ConfigureMarket {
        market: h100(),
        config: MarketConfig::new(MarketConfigFields {
            charge_period: ChargePeriod::new(period_s).unwrap(),
            report_interval_ms,
            heartbeat_timeout_ms,
            ..MarketConfigFields::default()
        })
        .unwrap(),
    }
}

/// An ask available until 2027, for the metered tests, which run in 2026.
pub fn offer(account: AccountId, client_id: u128, price: &str, gpus: u64) -> OrderBuilder {
    ask(account, client_id, price, gpus).until(1_798_761_600_000)
}

/// The node of `ask(provider, client_id, ..)`.
pub fn node_of(provider: AccountId, client_id: u128) -> NodeId {
    NodeId::parse(&format!("node-{}-{client_id}", provider.0)).unwrap()
}

/// A node's report made as it arrives ([`Scenario::when`] dates it at the command's time):
/// one healthy H100 (UUID `GPU-<node>`), listing `leases` as healthy.
pub fn beat(provider: AccountId, node: NodeId, sequence: u64, leases: &[u64]) -> Command {
    beat_made(provider, node, sequence, leases, MADE_ON_ARRIVAL)
}

/// The report time [`beat`] leaves for the scenario to set.
pub const MADE_ON_ARRIVAL: i64 = i64::MAX;

/// The name NVML reports for an H100 80 GB, which [`proven_market`] maps to its class.
pub const H100_NAME: &str = "NVIDIA H100 80GB HBM3";

/// One healthy NVIDIA GPU as a report states it.
pub fn gpu(index: u32, model: &str, uuid: &str, memory_mb: u64) -> GpuStatus {
    GpuStatus {
        index,
        vendor: Vendor::Nvidia,
        model: ShortText::parse(model).unwrap(),
        uuid: ShortText::parse(uuid).unwrap(),
        memory_mb: Some(memory_mb),
        pci_bus_id: None,
        healthy: true,
    }
}

/// `count` H100s of `node` (UUIDs `GPU-<node>-<index>`).
pub fn h100s(node: NodeId, count: u32) -> Vec<GpuStatus> {
    (0..count)
        .map(|i| gpu(i, H100_NAME, &format!("GPU-{node}-{i}"), 81_559))
        .collect()
}

/// [`beat`], made at `made` by the node's clock.
pub fn beat_made(
    provider: AccountId,
    node: NodeId,
    sequence: u64,
    leases: &[u64],
    made: i64,
) -> Command {
    let gpus = vec![gpu(0, H100_NAME, &format!("GPU-{node}"), 81_559)];
    beat_with(provider, node, sequence, leases, gpus, made)
}

/// A report of `node` stating `gpus`, made at `made` (or [`MADE_ON_ARRIVAL`]).
pub fn beat_with(
    provider: AccountId,
    node: NodeId,
    sequence: u64,
    leases: &[u64],
    gpus: Vec<GpuStatus>,
    made: i64,
) -> Command {
    Command::SignedHeartbeat(Box::new(SignedHeartbeat {
        provider,
        node,
        market: h100(),
        sequence,
        reported_at: Timestamp(made),
        simulated: false,
        gpus,
        healthy_leases: leases.iter().map(|&l| LeaseId(l)).collect(),
        evidence: ReportEvidence {
            node_key: NodeKey([1; 32]),
            signed: b"{}".to_vec(),
            signature: Signature([2; 64]),
        },
    }))
}

/// The H100 market proving its providers: [`H100_NAME`] is its class, `bond` per GPU, a
/// quarter slashed on a provider failure, a day's unbonding, hourly periods, a report a
/// minute and [`TIMEOUT`].
pub fn proven_market(bond: &str) -> Command {
    Command::ConfigureMarket {
        market: h100(),
        config: MarketConfig::new(MarketConfigFields {
            charge_period: ChargePeriod::HOUR,
            report_interval_ms: 60_000,
            heartbeat_timeout_ms: TIMEOUT as u32,
            bond_per_gpu: amt(bond),
            slash_share_bps: 2_500,
            unbonding_delay_ms: 24 * HOUR as u64,
            model_names: vec![ShortText::parse(H100_NAME).unwrap()],
            ..MarketConfigFields::default()
        })
        .unwrap(),
    }
}

pub fn post_bond(provider: AccountId, amount: &str) -> Command {
    Command::PostBond {
        provider,
        market: h100(),
        amount: amt(amount),
    }
}

pub fn withdraw_bond(provider: AccountId, amount: &str) -> Command {
    Command::WithdrawBond {
        provider,
        market: h100(),
        amount: amt(amount),
    }
}

pub fn stop(by: AccountId, lease: u64) -> Command {
    Command::StopLease {
        by,
        lease_id: LeaseId(lease),
    }
}

/// An order under construction; `.into()` makes it a `Place` command, or a `PlaceWith` once
/// it has options.
#[derive(Clone, Debug)]
pub struct OrderBuilder {
    pub order: NewOrder,
    pub options: Option<OrderOptions>,
}

pub fn bid(account: AccountId, client_id: u128, price: &str, gpus: u64) -> OrderBuilder {
    OrderBuilder::new(NewOrder {
        account,
        client_id: ClientOrderId(client_id),
        market: h100(),
        price: px(price),
        gpus: Gpus::new(gpus).unwrap(),
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: OrderTerms::Bid(BidSpec::any(Hours::new(1).unwrap())),
    })
}

pub fn ask(account: AccountId, client_id: u128, price: &str, gpus: u64) -> OrderBuilder {
    OrderBuilder::new(NewOrder {
        account,
        client_id: ClientOrderId(client_id),
        market: h100(),
        price: px(price),
        gpus: Gpus::new(gpus).unwrap(),
        tif: TimeInForce::Gtc,
        post_only: false,
        terms: OrderTerms::Ask(AskSpec {
            node: NodeId::parse(&format!("node-{}-{client_id}", account.0)).unwrap(),
            vendor: Vendor::Nvidia,
            vram_gb: 80,
            interconnect: Interconnect::NvLink,
            region: region("eu-west"),
            available_until: Timestamp(T0 + 1_000 * HOUR),
        }),
    })
}

impl OrderBuilder {
    fn new(order: NewOrder) -> Self {
        OrderBuilder {
            order,
            options: None,
        }
    }

    fn bid_spec(&mut self) -> &mut BidSpec {
        match &mut self.order.terms {
            OrderTerms::Bid(b) => b,
            OrderTerms::Ask(_) => panic!("a bid-only setting on an ask"),
        }
    }

    fn ask_spec(&mut self) -> &mut AskSpec {
        match &mut self.order.terms {
            OrderTerms::Ask(a) => a,
            OrderTerms::Bid(_) => panic!("an ask-only setting on a bid"),
        }
    }

    pub fn tif(mut self, tif: TimeInForce) -> Self {
        self.order.tif = tif;
        self
    }

    pub fn post_only(mut self) -> Self {
        self.order.post_only = true;
        self
    }

    pub fn market(mut self, market: &str) -> Self {
        self.order.market = MarketId::parse(market).unwrap();
        self
    }

    /// Placed with `PlaceWith`, default options: a bid's leases are metered.
    pub fn metered(mut self) -> Self {
        self.options.get_or_insert_with(OrderOptions::default);
        self
    }

    pub fn rebid(mut self) -> Self {
        self.options
            .get_or_insert_with(OrderOptions::default)
            .rebid_on_failure = true;
        self
    }

    pub fn exclude(mut self, provider: AccountId, node: NodeId) -> Self {
        self.options
            .get_or_insert_with(OrderOptions::default)
            .exclude_nodes
            .push(NodeRef { provider, node });
        self
    }

    pub fn hours(mut self, hours: u64) -> Self {
        self.bid_spec().hours = Hours::new(hours).unwrap();
        self
    }

    pub fn regions(mut self, regions: &[&str]) -> Self {
        self.bid_spec().regions = regions.iter().map(|r| region(r)).collect();
        self
    }

    pub fn min_vram(mut self, gb: u32) -> Self {
        self.bid_spec().min_vram_gb = gb;
        self
    }

    pub fn interconnects(mut self, i: &[Interconnect]) -> Self {
        self.bid_spec().interconnects = i.to_vec();
        self
    }

    pub fn vendor(mut self, v: Vendor) -> Self {
        self.bid_spec().vendor = Some(v);
        self
    }

    pub fn min_reputation(mut self, score: u64) -> Self {
        self.bid_spec().min_reputation = Reputation::new(score).unwrap();
        self
    }

    pub fn single_node(mut self) -> Self {
        self.bid_spec().single_node = true;
        self
    }

    pub fn all_or_none(mut self) -> Self {
        self.bid_spec().all_or_none = true;
        self
    }

    pub fn min_fill(mut self, gpus: u64) -> Self {
        self.bid_spec().min_fill = Some(Gpus::new(gpus).unwrap());
        self
    }

    pub fn in_region(mut self, r: &str) -> Self {
        self.ask_spec().region = region(r);
        self
    }

    pub fn vram(mut self, gb: u32) -> Self {
        self.ask_spec().vram_gb = gb;
        self
    }

    pub fn interconnect(mut self, i: Interconnect) -> Self {
        self.ask_spec().interconnect = i;
        self
    }

    pub fn made_by(mut self, v: Vendor) -> Self {
        self.ask_spec().vendor = v;
        self
    }

    pub fn until(mut self, ms: i64) -> Self {
        self.ask_spec().available_until = Timestamp(ms);
        self
    }

    pub fn on_node(mut self, node: NodeId) -> Self {
        self.ask_spec().node = node;
        self
    }
}

impl From<OrderBuilder> for Command {
    fn from(b: OrderBuilder) -> Command {
        match b.options {
            None => Command::Place(b.order),
            Some(options) => Command::PlaceWith {
                order: b.order,
                options,
            },
        }
    }
}

pub fn cancel(account: AccountId, order: u64) -> Command {
    Command::Cancel {
        account,
        order_id: OrderId(order),
    }
}

pub fn amend(account: AccountId, order: u64, price: Option<&str>, gpus: Option<u64>) -> Command {
    Command::Amend {
        account,
        order_id: OrderId(order),
        price: price.map(px),
        gpus: gpus.map(|g| Gpus::new(g).unwrap()),
    }
}

/// An engine with a clock that advances one millisecond per command unless told otherwise.
#[derive(Debug)]
pub struct Scenario {
    pub engine: Engine,
    pub now: i64,
    /// The sequence number of the last report `beats` sent (each node's must increase).
    pub sequence: u64,
}

impl Scenario {
    pub fn given(commands: impl IntoIterator<Item = Command>) -> Scenario {
        let mut s = Scenario {
            sequence: 0,
            engine: Engine::new(),
            now: T0,
        };
        for c in commands {
            let outcome = s.when(c.clone());
            assert!(
                outcome.result.is_ok(),
                "given {c:?} was rejected: {:?}",
                outcome.result
            );
        }
        s
    }

    /// Moves the clock to `ms` for the next command.
    pub fn at(&mut self, ms: i64) -> &mut Self {
        self.now = ms;
        self
    }

    /// Heartbeats of `node` listing `leases`, at `from` and every `every` ms before `until`;
    /// returns every event on the way with the time of its command.
    pub fn beats(
        &mut self,
        provider: AccountId,
        node: NodeId,
        leases: &[u64],
        (from, every, until): (i64, i64, i64),
    ) -> Vec<(i64, Event)> {
        let mut seen = Vec::new();
        for at in (from..until).step_by(every as usize) {
            self.sequence += 1;
            let report = beat(provider, node, self.sequence, leases);
            let out = self.at(at).when(report);
            out.accepted();
            seen.extend(out.events.into_iter().map(|e| (at, e)));
        }
        seen
    }

    pub fn when(&mut self, command: impl Into<Command>) -> Outcome {
        let mut command = command.into();
        if let Command::SignedHeartbeat(beat) = &mut command {
            if beat.reported_at.0 == MADE_ON_ARRIVAL {
                beat.reported_at = Timestamp(self.now);
            }
        }
        let mut events = Vec::new();
        let before = self.engine.snapshot();
        let result = self
            .engine
            .apply(Timestamp(self.now), &command, &mut events);
        self.now += 1;
        if result.is_err() {
            // A rejection changes nothing but what time alone would have changed.
            let mut timed = Engine::restore(&before).unwrap();
            let mut expired = Vec::new();
            let at = Timestamp(self.now - 1).max(timed.now());
            timed.apply(at, &Command::Tick, &mut expired).unwrap();
            assert_eq!(events, expired, "a rejected command emitted its own events");
            assert_eq!(
                timed.state_hash(),
                self.engine.state_hash(),
                "a rejected command changed state"
            );
        }
        let problems = self.engine.audit();
        assert!(problems.is_empty(), "invariants broken: {problems:#?}");
        Outcome { result, events }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub result: Result<(), Rejection>,
    pub events: Vec<Event>,
}

/// A fill as the tests state it: (bid order, ask order, GPUs, price).
pub type Fill = (u64, u64, u32, &'static str);

impl Outcome {
    pub fn then_rejected(&self, expected: Rejection) {
        assert_eq!(self.result, Err(expected), "events: {:#?}", self.events);
        assert!(
            self.events.is_empty(),
            "rejected command emitted {:#?}",
            self.events
        );
    }

    pub fn then_rejected_with(&self, code: ErrorCode) {
        match &self.result {
            Err(r) => assert_eq!(r.code(), code, "{r}"),
            Ok(()) => panic!("expected {code}, got events {:#?}", self.events),
        }
    }

    pub fn accepted(&self) -> &Self {
        assert!(self.result.is_ok(), "rejected: {:?}", self.result);
        self
    }

    pub fn fills(&self) -> Vec<(u64, u64, u32, Price)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::LeaseCreated {
                    bid_order,
                    ask_order,
                    gpus,
                    price,
                    ..
                } => Some((bid_order.0, ask_order.0, gpus.get(), *price)),
                _ => None,
            })
            .collect()
    }

    pub fn then_fills(&self, expected: &[Fill]) -> &Self {
        self.accepted();
        let expected: Vec<_> = expected
            .iter()
            .map(|(b, a, g, p)| (*b, *a, *g, px(p)))
            .collect();
        assert_eq!(self.fills(), expected, "events: {:#?}", self.events);
        self
    }

    pub fn cancels(&self) -> Vec<(u64, CancelReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::OrderCancelled {
                    order_id, reason, ..
                } => Some((order_id.0, *reason)),
                _ => None,
            })
            .collect()
    }

    pub fn then_cancels(&self, expected: &[(u64, CancelReason)]) -> &Self {
        assert_eq!(self.cancels(), expected, "events: {:#?}", self.events);
        self
    }

    /// The kinds of the events, in order: what happened, at a glance.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(Event::kind).collect()
    }

    pub fn then_kinds(&self, expected: &[&str]) -> &Self {
        assert_eq!(self.kinds(), expected, "events: {:#?}", self.events);
        self
    }
}
