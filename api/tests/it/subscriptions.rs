//! Subscriptions over a real websocket with the `graphql-transport-ws` protocol.

use std::net::TcpStream;

use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::*;

pub(super) type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects, authenticates with the init payload and subscribes to `query`.
pub(super) fn subscribe(m: &Market, key: Option<&str>, query: &str) -> Socket {
    let mut request = format!("{}/graphql", m.url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tungstenite::connect(request).unwrap();
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    let payload = key.map_or(json!({}), |k| json!({"apiKey": k}));
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    );
    assert_eq!(receive(&mut socket)["type"], "connection_ack");
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": query}}),
    );
    socket
}

pub(super) fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).unwrap();
}

/// The next protocol message (pings answered on the way).
pub(super) fn receive(socket: &mut Socket) -> Value {
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                if message["type"] == "ping" {
                    send(socket, json!({"type": "pong"}));
                    continue;
                }
                return message;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected websocket message {other:?}"),
        }
    }
}

#[test]
fn subscribers_see_trades_depth_their_orders_and_lease_offers() {
    let m = Market::start("api_subscriptions", Limits::default());
    m.seed();
    let mut trades = subscribe(
        &m,
        None,
        "subscription { trades(market: \"H100-80GB\") { leaseId price gpus taker } }",
    );
    let mut depth = subscribe(
        &m,
        None,
        "subscription { depth(market: \"H100-80GB\", levels: 1) { asks { gpus } } }",
    );
    assert_eq!(
        receive(&mut depth)["payload"]["data"]["depth"]["asks"],
        json!([{"gpus": 8}]),
        "the book as it is now comes first"
    );
    let mut mine = subscribe(
        &m,
        Some(&m.buyer),
        "subscription { myOrderUpdates { orderId change remaining leaseId } }",
    );
    let mut offers = subscribe(
        &m,
        Some(&m.provider),
        "subscription { leaseOffers { leaseId node gpus buyer } }",
    );
    let mut theirs = subscribe(
        &m,
        Some(&m.provider),
        "subscription { myOrderUpdates { orderId change remaining leaseId } }",
    );
    // Subscriptions start when the server has them; give the server a moment to register
    // them before the order goes in.
    thread::sleep(Duration::from_millis(300));

    let placed = m.ok(&m.buyer, PLACE, bid_input("601", "2.10", 3))["placeOrder"].clone();
    let order_id = placed["orderId"].as_u64().unwrap();

    let trade = receive(&mut trades);
    assert_eq!(
        trade["payload"]["data"]["trades"],
        json!({"leaseId": 1, "price": "2.000000", "gpus": 3, "taker": "bid"})
    );
    assert_eq!(
        receive(&mut depth)["payload"]["data"]["depth"]["asks"],
        json!([{"gpus": 5}])
    );
    let updates: Vec<Value> = (0..2)
        .map(|_| receive(&mut mine)["payload"]["data"]["myOrderUpdates"].clone())
        .collect();
    assert_eq!(
        updates,
        [
            json!({"orderId": order_id, "change": "accepted", "remaining": 3, "leaseId": null}),
            json!({"orderId": order_id, "change": "filled", "remaining": 0, "leaseId": 1}),
        ]
    );
    assert_eq!(
        receive(&mut offers)["payload"]["data"]["leaseOffers"],
        json!({"leaseId": 1, "node": "node-a", "gpus": 3, "buyer": T_BUYER})
    );
    // The provider's own updates: its ask's fill, never the buyer's order.
    let ask = receive(&mut theirs)["payload"]["data"]["myOrderUpdates"].clone();
    assert_ne!(ask["orderId"], json!(order_id), "{ask}");
    assert_eq!(
        (&ask["change"], &ask["remaining"], &ask["leaseId"]),
        (&json!("filled"), &json!(5), &json!(1)),
        "{ask}"
    );

    // Private subscriptions need a key, and the right role.
    // A resolver's refusal arrives as the subscription's one `next` with errors, then
    // `complete`.
    let code = |socket: &mut Socket| {
        let refused = receive(socket);
        assert_eq!(refused["type"], "next", "{refused}");
        assert!(refused["payload"]["data"].is_null(), "{refused}");
        let code = refused["payload"]["errors"][0]["extensions"]["code"].clone();
        assert_eq!(receive(socket)["type"], "complete");
        code
    };
    let mut anonymous = subscribe(&m, None, "subscription { myOrderUpdates { orderId } }");
    assert_eq!(code(&mut anonymous), "UNAUTHENTICATED");
    let mut trader_offers = subscribe(
        &m,
        Some(&m.buyer),
        "subscription { leaseOffers { leaseId } }",
    );
    assert_eq!(code(&mut trader_offers), "FORBIDDEN");
}

/// Sends operation `id` on an open socket and returns its one `next` payload, after which
/// the server completes it.
fn operate(socket: &mut Socket, id: &str, query: &str, variables: Value) -> Value {
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    );
    let next = receive(socket);
    assert_eq!(
        (&next["type"], &next["id"]),
        (&json!("next"), &json!(id)),
        "{next}"
    );
    let complete = receive(socket);
    assert_eq!(
        (&complete["type"], &complete["id"]),
        (&json!("complete"), &json!(id))
    );
    next["payload"].clone()
}

#[test]
fn a_bot_places_and_cancels_over_the_socket_it_holds_within_its_rate() {
    let m = Market::start(
        "api_ws_trade",
        Limits {
            rate_per_sec: 1,
            burst: 3,
            ..Limits::default()
        },
    );
    m.seed();
    // Given a trader's socket, its first operation a subscription to its own orders.
    let mut socket = subscribe(
        &m,
        Some(&m.buyer),
        "subscription { myOrderUpdates { orderId change remaining } }",
    );
    thread::sleep(Duration::from_millis(300));
    // When it places a bid below the ask over the same socket.
    let placed = operate(&mut socket, "2", PLACE, bid_input("701", "1.50", 2));
    assert!(placed["errors"].is_null(), "{placed}");
    let order_id = placed["data"]["placeOrder"]["orderId"].as_u64().unwrap();
    assert_eq!(placed["data"]["placeOrder"]["status"], "OPEN", "{placed}");
    let update = receive(&mut socket);
    assert_eq!(update["id"], "1");
    assert_eq!(
        update["payload"]["data"]["myOrderUpdates"],
        json!({"orderId": order_id, "change": "accepted", "remaining": 2})
    );
    // And cancels it there too.
    let cancelled = operate(
        &mut socket,
        "3",
        "mutation($id: ID!) { cancelOrder(orderId: $id) { orderId remaining } }",
        json!({"id": order_id.to_string()}),
    );
    assert_eq!(
        cancelled["data"]["cancelOrder"],
        json!({"orderId": order_id, "remaining": 2}),
        "{cancelled}"
    );
    // Then the subscription on the same socket saw the cancel.
    let update = receive(&mut socket);
    assert_eq!(
        update["payload"]["data"]["myOrderUpdates"]["change"],
        "cancelled"
    );

    // Each operation took a request from the key's rate (burst 3): the fourth is refused
    // with the protocol's error message and never runs; the socket stays open.
    send(
        &mut socket,
        json!({"id": "4", "type": "subscribe", "payload": {"query": PLACE,
            "variables": bid_input("702", "1.50", 1)}}),
    );
    let refused = receive(&mut socket);
    assert_eq!(
        (&refused["type"], &refused["id"]),
        (&json!("error"), &json!("4")),
        "{refused}"
    );
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // Once the rate refills, the same socket places again.
    thread::sleep(Duration::from_millis(1_200));
    let placed = operate(&mut socket, "5", PLACE, bid_input("702", "1.50", 1));
    assert_eq!(
        placed["data"]["placeOrder"]["clientOrderId"], "702",
        "{placed}"
    );
    assert_eq!(placed["data"]["placeOrder"]["status"], "OPEN");
}
