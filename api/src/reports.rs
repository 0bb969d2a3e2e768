//! Signed reports from provider agents.
//!
//! A node registers its ed25519 public key once (`registerNode`). Each report is a JSON
//! document the agent signs as bytes; the API verifies the signature over exactly the bytes
//! it received, then parses them, so no re-serialisation can change what was signed. A
//! report proves three things at once: the node is alive and which of its leases are
//! healthy (a `SignedHeartbeat` command carrying the report's bytes, signature and key as
//! evidence: the engine meters leases and judges liveness by it), what its GPUs measure now
//! (stored as samples), and which leases' jobs it started (`StartLease` commands).
//!
//! Exactly once where it matters: the commands go to the engine before the report is
//! recorded, so a crash in between makes the agent resend it; a resent report repeats a
//! heartbeat (the engine judges by the record's own time, so the repeat also shows the
//! listed leases healthy up to when it arrived: the agent resends at once, which bounds
//! that) and a start the engine already has (`LEASE_ALREADY_STARTED`, ignored). Once
//! recorded, its sequence number makes any later copy an acknowledged no-op.

use contract::{
    AccountId, GpuStatus, LeaseId, MarketId, NodeId, NodeKey, NodeReport, ReportEvidence,
    ShortText, SignedHeartbeat, Timestamp, Vendor,
};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::errors::ApiError;

/// The most GPUs one node may report.
pub const MAX_GPUS: usize = 64;
/// The most lease starts, and the most healthy leases, one report may carry.
pub const MAX_STARTS: usize = 256;

/// Parses a hex string of exactly `N` bytes.
fn hex_bytes<const N: usize>(what: &str, hex: &str) -> Result<[u8; N], ApiError> {
    let bad = || ApiError::validation(format!("{what}: expected {} hex digits", N * 2));
    if hex.len() != N * 2 {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// A node's public key from its hex form: a point on the curve that is not of small order.
/// The identity and the other small-order points are refused: with one, a signature whose
/// R is chosen to match verifies for any report.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, ApiError> {
    let bytes = hex_bytes::<32>("publicKey", hex)?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ApiError::validation("publicKey: not an ed25519 public key"))?;
    if key.is_weak() {
        return Err(ApiError::validation(
            "publicKey: a weak ed25519 key (a small-order point, such as the identity)",
        ));
    }
    Ok(key)
}

/// Checks `signature` (hex) over `report` with `key` by strict verification (no
/// small-order R, canonical S), then parses and validates the report.
pub fn verify(key: &VerifyingKey, report: &str, signature: &str) -> Result<NodeReport, ApiError> {
    let signature = Signature::from_bytes(&hex_bytes::<64>("signature", signature)?);
    key.verify_strict(report.as_bytes(), &signature)
        .map_err(|_| {
            ApiError::forbidden("the report's signature does not verify with the node's key")
        })?;
    let report: NodeReport =
        serde_json::from_str(report).map_err(|e| ApiError::validation(format!("report: {e}")))?;
    if report.gpus.is_empty() || report.gpus.len() > MAX_GPUS {
        return Err(ApiError::validation(format!(
            "report: 1 to {MAX_GPUS} GPUs (got {})",
            report.gpus.len()
        )));
    }
    if report.leases_started.len() > MAX_STARTS || report.healthy_leases.len() > MAX_STARTS {
        return Err(ApiError::validation(format!(
            "report: at most {MAX_STARTS} lease starts and {MAX_STARTS} healthy leases"
        )));
    }
    check(&report)?;
    Ok(report)
}

/// Everything the report's values must satisfy before any of it reaches the log or the
/// database: a report refused here appends nothing, and the agent sets it aside instead of
/// sending it again.
fn check(report: &NodeReport) -> Result<(), ApiError> {
    let bad = |what: String| Err(ApiError::validation(format!("report: {what}")));
    // The tables keep counts and ids as signed 64-bit integers.
    let fits = |v: u64| i64::try_from(v).is_ok();
    if !fits(report.sequence) {
        return bad(format!("sequence {} is out of range", report.sequence));
    }
    let mut indices = std::collections::BTreeSet::new();
    for (i, gpu) in report.gpus.iter().enumerate() {
        if !indices.insert(gpu.index) {
            return bad(format!("GPU index {} appears twice", gpu.index));
        }
        if gpu.index >= MAX_GPUS as u32 {
            return bad(format!("GPU index {} is not below {MAX_GPUS}", gpu.index));
        }
        if report.gpus[..i].iter().any(|g| g.uuid == gpu.uuid) {
            return bad(format!("GPU uuid {:?} appears twice", gpu.uuid));
        }
        let pci = gpu.pci_bus_id.iter();
        for (what, text) in [("name", &gpu.name), ("uuid", &gpu.uuid)]
            .into_iter()
            .chain(pci.map(|p| ("pci bus id", p)))
        {
            if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
                return bad(format!(
                    "GPU {} {what}: 1 to 256 printable characters",
                    gpu.index
                ));
            }
        }
        let counts = [gpu.memory_used_mb, gpu.memory_total_mb, gpu.ecc_errors];
        if counts.into_iter().flatten().any(|v| !fits(v)) {
            return bad(format!("GPU {}: a count is out of range", gpu.index));
        }
        if gpu.sm_clock_mhz.is_some_and(|c| i32::try_from(c).is_err()) {
            return bad(format!("GPU {}: the clock is out of range", gpu.index));
        }
    }
    let mut starts = std::collections::BTreeSet::new();
    for &lease in &report.leases_started {
        if !fits(lease) || !starts.insert(lease) {
            return bad(format!("lease start {lease} is out of range or repeated"));
        }
    }
    let mut healthy = std::collections::BTreeSet::new();
    for &lease in &report.healthy_leases {
        if !fits(lease) || !healthy.insert(lease) {
            return bad(format!("healthy lease {lease} is out of range or repeated"));
        }
    }
    if report.outputs.len() > MAX_STARTS {
        return bad(format!("at most {MAX_STARTS} jobs' outputs"));
    }
    let mut outputs = std::collections::BTreeSet::new();
    for out in &report.outputs {
        if !fits(out.lease) || !outputs.insert(out.lease) {
            return bad(format!(
                "outputs of lease {} out of range or repeated",
                out.lease
            ));
        }
        for cid in [&out.manifest, &out.log] {
            if contract::Digest::parse(cid).is_err() {
                return bad(format!(
                    "outputs of lease {}: {cid:?} is not a cid",
                    out.lease
                ));
            }
        }
        if out.gpus.len() > MAX_GPUS
            || out
                .gpus
                .iter()
                .any(|g| !report.gpus.iter().any(|s| s.uuid == *g))
        {
            return bad(format!(
                "outputs of lease {}: every GPU must be one this report samples",
                out.lease
            ));
        }
    }
    Ok(())
}

/// What the report tells the engine, with the report itself as evidence: `text` and
/// `signature` exactly as received and verified with `key`, `report` parsed from them. Every
/// GPU the report lists is present and counted healthy; its text must be the contract's
/// short text (`VALIDATION` otherwise, before anything is appended).
pub fn heartbeat(
    provider: AccountId,
    node: NodeId,
    market: MarketId,
    key: &VerifyingKey,
    text: &str,
    signature: &str,
    report: &NodeReport,
) -> Result<SignedHeartbeat, ApiError> {
    let short = |index: u32, what: &str, s: &str| {
        ShortText::parse(s)
            .map_err(|e| ApiError::validation(format!("report: GPU {index} {what}: {e}")))
    };
    let gpus = report
        .gpus
        .iter()
        .map(|gpu| {
            Ok(GpuStatus {
                index: gpu.index,
                vendor: vendor_of(&gpu.name, market),
                model: short(gpu.index, "name", &gpu.name)?,
                uuid: short(gpu.index, "uuid", &gpu.uuid)?,
                memory_mb: gpu.memory_total_mb,
                pci_bus_id: gpu
                    .pci_bus_id
                    .as_deref()
                    .map(|p| short(gpu.index, "pci bus id", p))
                    .transpose()?,
                healthy: true,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(SignedHeartbeat {
        provider,
        node,
        market,
        sequence: report.sequence,
        reported_at: Timestamp(report.at.timestamp_millis()),
        simulated: report.simulated,
        gpus,
        healthy_leases: report.healthy_leases.iter().copied().map(LeaseId).collect(),
        evidence: ReportEvidence {
            node_key: NodeKey(key.to_bytes()),
            signed: text.as_bytes().to_vec(),
            signature: contract::Signature(hex_bytes::<64>("signature", signature)?),
        },
    })
}

/// Re-verifies a heartbeat read back from the log with the evidence it carries: the key is a
/// strong ed25519 point, the signature verifies strictly over the exact bytes, and those
/// bytes, read as the report they are, make exactly this heartbeat (node, market, sequence,
/// time, simulation, GPUs, healthy leases). So anyone with the log can check every heartbeat
/// a bill rests on. (The provider is not in the report: the key is registered for a
/// provider in the database, not the log.)
pub fn check_evidence(beat: &SignedHeartbeat) -> Result<(), String> {
    let evidence = &beat.evidence;
    let key = VerifyingKey::from_bytes(&evidence.node_key.0)
        .map_err(|_| "the node key is not an ed25519 public key".to_owned())?;
    if key.is_weak() {
        return Err("the node key is a weak (small-order) point".to_owned());
    }
    let text = std::str::from_utf8(&evidence.signed)
        .map_err(|_| "the signed report is not UTF-8".to_owned())?;
    let signature = evidence.signature.to_string();
    let report = verify(&key, text, &signature).map_err(|e| e.message)?;
    if report.node != beat.node.as_str() || report.class != beat.market.as_str() {
        return Err(format!(
            "the signed report is node {:?} in class {:?}, the heartbeat says {} in {}",
            report.node, report.class, beat.node, beat.market
        ));
    }
    let rebuilt = heartbeat(
        beat.provider,
        beat.node,
        beat.market,
        &key,
        text,
        &signature,
        &report,
    )
    .map_err(|e| e.message)?;
    if rebuilt != *beat {
        return Err(format!(
            "the heartbeat does not say what its signed report says (report {})",
            report.sequence
        ));
    }
    Ok(())
}

/// A GPU's vendor from what its driver calls it (`NVIDIA H100 80GB HBM3`, `AMD Instinct
/// MI300X`), else from its class's name (AMD's classes are `MI…` and `RX…`). Neither naming
/// one (a simulated `sim H100`), it is NVIDIA's: the engine does not judge by the vendor a
/// report states, asks carry their own.
pub fn vendor_of(model: &str, class: MarketId) -> Vendor {
    let model = model.to_ascii_uppercase();
    const AMD: [&str; 3] = ["AMD", "RADEON", "INSTINCT"];
    const NVIDIA: [&str; 5] = ["NVIDIA", "GEFORCE", "TESLA", "QUADRO", "RTX"];
    if AMD.iter().any(|w| model.contains(w)) {
        return Vendor::Amd;
    }
    if NVIDIA.iter().any(|w| model.contains(w)) {
        return Vendor::Nvidia;
    }
    let class = class.as_str().to_ascii_uppercase();
    if class.starts_with("MI") || class.starts_with("RX") || class.contains("RADEON") {
        Vendor::Amd
    } else {
        Vendor::Nvidia
    }
}

#[cfg(test)]
mod tests {
    use contract::ErrorCode;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn report(sequence: u64) -> String {
        format!(
            r#"{{"node":"node-a","sequence":{sequence},"at":"2026-11-30T12:00:00Z","class":"H100-80GB",
            "simulated":true,"gpus":[{{"index":0,"name":"sim H100","uuid":"GPU-0",
            "utilisation_pct":42.5,"memory_used_mb":1024,"memory_total_mb":81920,
            "temperature_c":55,"power_w":300,"power_limit_w":700,"sm_clock_mhz":1980,
            "ecc_errors":null}}]}}"#
        )
    }

    #[test]
    fn a_signed_report_verifies_and_a_changed_one_does_not() {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let key = parse_public_key(&hex(signer.verifying_key().as_bytes())).unwrap();
        let text = report(1);
        let signature = hex(&signer.sign(text.as_bytes()).to_bytes());
        let parsed = verify(&key, &text, &signature).unwrap();
        assert_eq!(parsed.gpus[0].ecc_errors, None, "missing stays missing");
        assert_eq!(parsed.gpus[0].utilisation_pct, Some(42.5));

        let tampered = text.replace("42.5", "99.5");
        assert_eq!(
            verify(&key, &tampered, &signature).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = hex(&other.sign(text.as_bytes()).to_bytes());
        assert_eq!(
            verify(&key, &text, &forged).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            verify(&key, &text, "abc").unwrap_err().code,
            ErrorCode::Validation
        );
        assert_eq!(
            parse_public_key("zz").unwrap_err().code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn the_identity_and_other_small_order_keys_are_refused() {
        // The identity point (y = 1), and a point of order 2 (y = -1).
        let identity = format!("01{}", "00".repeat(31));
        let order_two = format!("ec{}7f", "ff".repeat(30));
        for key in [identity, order_two] {
            let refused = parse_public_key(&key).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Validation, "{key}");
            assert!(refused.message.contains("weak"), "{}", refused.message);
        }
        // With the identity as the key, R = identity and S = 0 satisfy the loose check for
        // every message; the strict one refuses it.
        let key = VerifyingKey::from_bytes(
            &hex_bytes::<32>("k", &format!("01{}", "00".repeat(31))).unwrap(),
        )
        .unwrap();
        let forged = format!("01{}{}", "00".repeat(31), "00".repeat(32));
        assert_eq!(
            verify(&key, &report(1), &forged).unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn malformed_reports_are_refused_even_when_signed() {
        let signer = SigningKey::from_bytes(&[9; 32]);
        let key = signer.verifying_key();
        for text in [
            "not json".to_owned(),
            report(1).replace("\"simulated\":true,", ""),
            report(1).replace("\"class\"", "\"colour\":1,\"class\""),
            r#"{"node":"n","sequence":1,"at":"2026-11-30T12:00:00Z","class":"X","simulated":false,"gpus":[]}"#.to_owned(),
            report(1).replace("}]}", "},{\"index\":0,\"name\":\"b\",\"uuid\":\"GPU-1\",\"utilisation_pct\":null,\"memory_used_mb\":null,\"memory_total_mb\":null,\"temperature_c\":null,\"power_w\":null,\"power_limit_w\":null,\"sm_clock_mhz\":null,\"ecc_errors\":null}]}"),
            report(1).replace("\"memory_used_mb\":1024", "\"memory_used_mb\":18446744073709551615"),
            report(9_223_372_036_854_775_808),
            report(1).replace("\"uuid\":\"GPU-0\"", "\"uuid\":\"\""),
            report(1).replace("}]}", "}],\"leases_started\":[5,5]}"),
        ] {
            let signature = hex(&signer.sign(text.as_bytes()).to_bytes());
            assert_eq!(verify(&key, &text, &signature).unwrap_err().code, ErrorCode::Validation, "{text}");
        }
    }

    /// Report 3 of `node-a` listing `healthy` leases, signed, verified and made a heartbeat:
    /// its key, text, signature and heartbeat.
    fn signed_beat(healthy: &str) -> (VerifyingKey, String, String, SignedHeartbeat) {
        let signer = SigningKey::from_bytes(&[7; 32]);
        let key = signer.verifying_key();
        let text = report(3).replace("}]}", &format!("}}],\"healthy_leases\":[{healthy}]}}"));
        let signature = hex(&signer.sign(text.as_bytes()).to_bytes());
        let parsed = verify(&key, &text, &signature).unwrap();
        let market = MarketId::parse("H100-80GB").unwrap();
        let node = NodeId::parse("node-a").unwrap();
        let beat = heartbeat(
            AccountId(11),
            node,
            market,
            &key,
            &text,
            &signature,
            &parsed,
        )
        .unwrap();
        (key, text, signature, beat)
    }

    #[test]
    fn a_verified_report_becomes_a_heartbeat_with_its_evidence() {
        let (key, text, signature, beat) = signed_beat("4,9");
        let (market, node) = (beat.market, beat.node);
        let signer = SigningKey::from_bytes(&[7; 32]);
        assert_eq!(beat.sequence, 3);
        assert_eq!(beat.healthy_leases, vec![LeaseId(4), LeaseId(9)]);
        assert_eq!(beat.reported_at, Timestamp(1_796_040_000_000));
        assert_eq!(beat.gpus.len(), 1);
        let gpu = &beat.gpus[0];
        assert_eq!(
            (
                gpu.model.as_str(),
                gpu.uuid.as_str(),
                gpu.memory_mb,
                gpu.healthy,
                gpu.vendor
            ),
            ("sim H100", "GPU-0", Some(81_920), true, Vendor::Nvidia)
        );
        assert_eq!(beat.evidence.signed, text.as_bytes());
        assert_eq!(beat.evidence.node_key, NodeKey(key.to_bytes()));
        assert_eq!(beat.evidence.signature.to_string(), signature);

        // Text the contract cannot carry is refused before anything is sent.
        let long = report(4).replace("sim H100", &"x".repeat(200));
        let signature = hex(&signer.sign(long.as_bytes()).to_bytes());
        let parsed = verify(&key, &long, &signature).unwrap();
        assert_eq!(
            heartbeat(
                AccountId(11),
                node,
                market,
                &key,
                &long,
                &signature,
                &parsed
            )
            .unwrap_err()
            .code,
            ErrorCode::Validation
        );
        let repeated = report(5).replace("}]}", "}],\"healthy_leases\":[4,4]}");
        let signature = hex(&signer.sign(repeated.as_bytes()).to_bytes());
        assert_eq!(
            verify(&key, &repeated, &signature).unwrap_err().code,
            ErrorCode::Validation
        );
    }

    #[test]
    fn a_heartbeat_from_the_log_verifies_against_its_evidence_and_a_changed_one_does_not() {
        let (_, _, _, beat) = signed_beat("4");
        assert_eq!(check_evidence(&beat), Ok(()));

        let mut more_health = beat.clone();
        more_health.healthy_leases.push(LeaseId(5));
        let mut later = beat.clone();
        later.reported_at = Timestamp(beat.reported_at.0 + 60_000);
        let mut other_node = beat.clone();
        other_node.node = NodeId::parse("node-b").unwrap();
        let mut forged = beat.clone();
        forged.evidence.signature.0[0] ^= 1;
        let mut weak = beat.clone();
        weak.evidence.node_key =
            NodeKey(hex_bytes::<32>("k", &format!("01{}", "00".repeat(31))).unwrap());
        for (what, changed) in [
            (
                "a lease listed healthy that the report does not list",
                more_health,
            ),
            ("a later time", later),
            ("another node", other_node),
            ("a changed signature", forged),
            ("the identity as the key", weak),
        ] {
            assert!(check_evidence(&changed).is_err(), "{what}");
        }
    }

    #[test]
    fn vendors_come_from_the_driver_s_name_then_the_class() {
        let class = |c: &str| MarketId::parse(c).unwrap();
        assert_eq!(
            vendor_of("NVIDIA H100 80GB HBM3", class("MI300X-192GB")),
            Vendor::Nvidia
        );
        assert_eq!(
            vendor_of("AMD Instinct MI300X", class("H100-80GB")),
            Vendor::Amd
        );
        assert_eq!(vendor_of("sim MI300X", class("MI300X-192GB")), Vendor::Amd);
        assert_eq!(vendor_of("sim H100", class("H100-80GB")), Vendor::Nvidia);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
