//! What an attacker or an unlucky client tries at the API's boundary: each is refused with
//! a code that says what happened, and changes nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::subscriptions::{send, Socket};
use super::*;

/// A websocket with the protocol negotiated, nothing sent yet.
fn connect(m: &Market) -> Socket {
    let mut request = format!("{}/graphql", m.url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, response) = tungstenite::connect(request).unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws",
        "the server agrees on the protocol"
    );
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
    }
    socket
}

/// The close code the server ends the socket with (protocol messages skipped).
fn closed_with(socket: &mut Socket) -> u16 {
    loop {
        match socket.read() {
            Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("the socket ended without a close frame: {e}"),
        }
    }
}

#[test]
fn subscriptions_close_with_the_protocol_s_codes_and_revocation_ends_them() {
    let m = Market::start("api_ws_codes", Limits::default());
    m.seed();

    let mut unknown = connect(&m);
    let forged = format!("gpm_1_{}", "ab".repeat(32));
    send(
        &mut unknown,
        json!({"type": "connection_init", "payload": {"apiKey": forged}}),
    );
    assert_eq!(closed_with(&mut unknown), 4401, "an unknown key");

    let mut early = connect(&m);
    send(
        &mut early,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { myOrderUpdates { orderId } }"}}),
    );
    assert_eq!(
        closed_with(&mut early),
        4401,
        "a subscription before the handshake"
    );

    let mut garbled = connect(&m);
    garbled
        .send(Message::text("this is not a protocol message"))
        .unwrap();
    assert_eq!(
        closed_with(&mut garbled),
        4400,
        "a frame that is not a message"
    );

    let mut binary = connect(&m);
    binary.send(Message::binary(vec![0u8, 1, 2])).unwrap();
    assert_eq!(closed_with(&mut binary), 4400, "a binary frame");

    // A trader's own key, revoked while its subscription runs.
    let created = m.ok(
        &m.admin,
        "mutation($a: ID) { createApiKey(role: TRADER, account: $a, label: \"short-lived\") { id key } }",
        json!({"a": T_BUYER.to_string()}),
    )["createApiKey"]
        .clone();
    let (id, key) = (
        created["id"].as_i64().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let mut socket = super::subscriptions::subscribe(
        &m,
        Some(key),
        "subscription { myOrderUpdates { orderId } }",
    );
    assert!(auth::revoke_key(&mut m.db.connect(), id).unwrap());
    let revoked = Instant::now();
    assert_eq!(
        closed_with(&mut socket),
        4403,
        "a revoked key's subscription ends"
    );
    let took = revoked.elapsed();
    assert!(
        took <= auth::RECHECK_AFTER + Duration::from_secs(2),
        "closed {took:?} after the revocation"
    );
}

#[test]
fn bodies_that_are_not_json_or_arrive_too_slowly_are_refused() {
    let m = Market::start(
        "api_bodies",
        Limits {
            body_timeout: Duration::from_millis(700),
            ..Limits::default()
        },
    );
    m.seed();
    let before = m.commands();
    let mutation =
        json!({"query": "mutation { creditDeposit(account: \"1\", amount: \"5\") { amount } }"})
            .to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = m
            .http
            .post(format!("{}/graphql", m.url))
            .bearer_auth(&m.admin)
            .body(mutation.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let body: Value = response.json().unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "UNSUPPORTED_MEDIA_TYPE"
        );
    }
    assert_eq!(m.commands(), before, "no form could run a mutation");

    // Headers promise a body that never comes.
    let address = m.url.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST /graphql HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"query\""
    )
    .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn failed_authentications_are_throttled_before_any_hash_and_known_keys_go_on() {
    let m = Market::start("api_auth_throttle", Limits::default());
    m.ok(&m.admin, "{ me { role } }", json!({}));
    // Wrong secrets for a key id that exists (the admin's), from one address.
    let admin_id: i64 = m.admin.split('_').nth(1).unwrap().parse().unwrap();
    let wrong = format!("gpm_{admin_id}_{}", "00".repeat(32));
    let mut codes = Vec::new();
    for _ in 0..14 {
        let (status, body) = m.gql_status(Some(&wrong), "{ me { role } }", json!({}));
        codes.push((
            status,
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    assert!(
        codes[..10]
            .iter()
            .all(|(s, c)| (*s, c.as_str()) == (401, "UNAUTHENTICATED")),
        "{codes:?}"
    );
    let (status, code) = &codes[13];
    assert_eq!((*status, code.as_str()), (429, "RATE_LIMITED"), "{codes:?}");
    let (_, body) = m.gql_status(Some(&wrong), "{ me { role } }", json!({}));
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("retry in"), "{message}");
    // The admin's real key was verified before: it is not locked out by someone else's
    // failures on its id or address, even once its cache entry is due for a check.
    thread::sleep(auth::RECHECK_AFTER + Duration::from_millis(200));
    assert_eq!(
        m.ok(&m.admin, "{ me { role } }", json!({}))["me"]["role"],
        "ADMIN"
    );
}

#[test]
fn nul_bytes_and_bad_reports_are_validation_errors_that_append_nothing() {
    let m = Market::start("api_nul", Limits::default());
    m.seed();
    let before = m.commands();
    for (query, variables) in [
        (
            "mutation($l: String!) { createApiKey(role: FINANCE, label: $l) { id } }",
            json!({"l": "ops\u{0}"}),
        ),
        (
            "mutation { createApiKey(role: FINANCE, label: \"ops\\u0000\") { id } }",
            json!({}),
        ),
        (
            "mutation($n: String!) { registerNode(node: $n, publicKey: \"00\") }",
            json!({"n": "node\u{0}a"}),
        ),
        (
            "mutation($t: String!) { submitJobLog(leaseId: \"1\", logTail: $t) }",
            json!({"t": "done\u{0}"}),
        ),
    ] {
        let (status, body) = m.gql_status(Some(&m.admin), query, variables);
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{query}: {body}");
        assert_eq!(status, 200, "a GraphQL error in a GraphQL answer");
        let message = error["message"].as_str().unwrap();
        assert!(
            !message.contains("invalid byte sequence"),
            "database text leaked: {message}"
        );
    }

    // A signed report with one GPU index twice: refused before any command.
    let node_key = SigningKey::from_bytes(&[3; 32]);
    let public: String = node_key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    m.ok(
        &m.provider,
        "mutation($k: String!) { registerNode(node: \"node-h\", publicKey: $k) }",
        json!({"k": public}),
    );
    let gpu = |index| {
        json!({"index": index, "name": "GPU", "uuid": format!("GPU-{index}"),
        "utilisation_pct": null, "memory_used_mb": null, "memory_total_mb": null,
        "temperature_c": null, "power_w": null, "power_limit_w": null, "sm_clock_mhz": null,
        "ecc_errors": null})
    };
    let report = json!({"node": "node-h", "sequence": 1, "at": "2026-12-01T00:00:00Z",
        "class": "H100-80GB", "simulated": true, "gpus": [gpu(0), gpu(0)]})
    .to_string();
    let signature: String = node_key
        .sign(report.as_bytes())
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let registered = m.commands();
    assert_eq!(
        m.code(
            Some(&m.provider),
            "mutation($r: String!, $s: String!) { submitNodeReport(report: $r, signature: $s) { duplicate } }",
            json!({"r": report, "s": signature}),
        ),
        "VALIDATION"
    );
    assert_eq!(
        m.commands(),
        registered,
        "the refused report appended nothing"
    );
    assert_eq!(registered, before, "nor did anything refused above");
}
