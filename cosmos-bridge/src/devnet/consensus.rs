//! The devnet's consensus side, computed as CometBFT 0.38 computes it: one validator with an
//! ed25519 key derived from the chain id, block headers and their Merkle hashes, part sets,
//! and the validator's signed precommits. Everything follows from the chain id and each
//! block's time, transactions and results, so a replayed chain has the same hashes and
//! signatures, and a light client can check them.

use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::crypto::{public_key, PublicKey};
use cosmrs::proto::tendermint::google::protobuf::Timestamp;
use cosmrs::proto::tendermint::types as pb;
use cosmrs::proto::tendermint::version::Consensus;
use cosmrs::tendermint::crypto::default::Sha256 as MerkleSha256;
use cosmrs::tendermint::merkle;
use sha2::{Digest, Sha256};

/// The validator's voting power (it is the only one).
pub const VOTING_POWER: i64 = 10;
/// CometBFT 0.38's block protocol version.
pub const BLOCK_PROTOCOL: u64 = 11;
/// CometBFT's default block limits, which the header's consensus hash commits to.
pub const MAX_BLOCK_BYTES: i64 = 22_020_096;
pub const MAX_BLOCK_GAS: i64 = -1;
/// Blocks travel in parts of this size; the block id commits to their Merkle root.
const PART_SIZE: usize = 65_536;

/// The Merkle root CometBFT uses everywhere (RFC 6962 leaves and inner nodes, SHA-256).
pub fn merkle_root<T: AsRef<[u8]>>(leaves: &[T]) -> Vec<u8> {
    merkle::simple_hash_from_byte_vectors::<MerkleSha256>(leaves).to_vec()
}

/// The devnet's only validator.
#[derive(Clone)]
pub struct Validator {
    key: ed25519_consensus::SigningKey,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("address", &hex::encode_upper(self.address()))
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// The key is a hash of the chain id: a simulator has no secret to keep, and the same
    /// chain id must give the same signatures after a replay.
    pub fn for_chain(chain_id: &str) -> Validator {
        let seed: [u8; 32] =
            Sha256::digest(format!("gpumarket devnet validator\0{chain_id}")).into();
        Validator {
            key: ed25519_consensus::SigningKey::from(seed),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verification_key().to_bytes()
    }

    /// CometBFT's validator address: the first 20 bytes of the key's SHA-256.
    pub fn address(&self) -> Vec<u8> {
        Sha256::digest(self.public_key())[..20].to_vec()
    }

    /// The hash of the validator set, as `validators_hash` carries it.
    pub fn set_hash(&self) -> Vec<u8> {
        let simple = pb::SimpleValidator {
            pub_key: Some(PublicKey {
                sum: Some(public_key::Sum::Ed25519(self.public_key().to_vec())),
            }),
            voting_power: VOTING_POWER,
        };
        merkle_root(&[simple.encode_to_vec()])
    }

    /// The precommit for `id` at `height`, signed over CometBFT's canonical vote bytes.
    fn precommit(
        &self,
        chain_id: &str,
        height: i64,
        id: &pb::BlockId,
        time: Timestamp,
    ) -> pb::CommitSig {
        let parts = id.part_set_header.clone().unwrap_or_default();
        let vote = pb::CanonicalVote {
            r#type: pb::SignedMsgType::Precommit as i32,
            height,
            round: 0,
            block_id: Some(pb::CanonicalBlockId {
                hash: id.hash.clone(),
                part_set_header: Some(pb::CanonicalPartSetHeader {
                    total: parts.total,
                    hash: parts.hash,
                }),
            }),
            timestamp: Some(time),
            chain_id: chain_id.to_owned(),
        };
        pb::CommitSig {
            block_id_flag: pb::BlockIdFlag::Commit as i32,
            validator_address: self.address(),
            timestamp: Some(time),
            signature: self
                .key
                .sign(&vote.encode_length_delimited_to_vec())
                .to_bytes()
                .to_vec(),
        }
    }
}

/// The block id of no block (before the first), as Go encodes it: its part set header is
/// never omitted, even empty, and what is hashed must have the same bytes.
fn no_block_id() -> pb::BlockId {
    pb::BlockId {
        hash: Vec::new(),
        part_set_header: Some(pb::PartSetHeader::default()),
    }
}

/// The hash of the consensus parameters, as `consensus_hash` carries it.
pub fn consensus_hash() -> Vec<u8> {
    let params = pb::HashedParams {
        block_max_bytes: MAX_BLOCK_BYTES,
        block_max_gas: MAX_BLOCK_GAS,
    };
    Sha256::digest(params.encode_to_vec()).to_vec()
}

/// A header's hash: the Merkle root of its fields, each encoded as CometBFT's `cdcEncode`
/// does (scalars in their protobuf wrapper types; prost encodes `String`, `i64` and
/// `Vec<u8>` as exactly those wrappers).
pub fn header_hash(h: &pb::Header) -> Vec<u8> {
    merkle_root(&[
        h.version.unwrap_or_default().encode_to_vec(),
        h.chain_id.encode_to_vec(),
        h.height.encode_to_vec(),
        h.time.unwrap_or_default().encode_to_vec(),
        h.last_block_id
            .clone()
            .unwrap_or_else(no_block_id)
            .encode_to_vec(),
        h.last_commit_hash.encode_to_vec(),
        h.data_hash.encode_to_vec(),
        h.validators_hash.encode_to_vec(),
        h.next_validators_hash.encode_to_vec(),
        h.consensus_hash.encode_to_vec(),
        h.app_hash.encode_to_vec(),
        h.last_results_hash.encode_to_vec(),
        h.evidence_hash.encode_to_vec(),
        h.proposer_address.encode_to_vec(),
    ])
}

/// A timestamp from milliseconds since the epoch.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A committed block, as consensus sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub header: pb::Header,
    pub id: pb::BlockId,
    /// The commit for the block before this one, carried in this block.
    pub last_commit: pb::Commit,
    /// This block's own commit: the validator's precommit.
    pub commit: pb::Commit,
    /// The block's protobuf size in bytes.
    pub size: usize,
}

/// What a new block commits to besides its transactions.
#[derive(Debug)]
pub struct Proposal<'a> {
    pub chain_id: &'a str,
    pub height: i64,
    pub time_ms: i64,
    /// The block before, if any.
    pub last: Option<&'a Sealed>,
    /// The application's state after the block before (CometBFT's app hash lags a block).
    pub app_hash: Vec<u8>,
    /// The Merkle root of the block before's deterministic transaction results.
    pub last_results_hash: Vec<u8>,
}

/// Makes block `proposal.height` with `txs`, signed by `validator`.
pub fn seal(validator: &Validator, proposal: Proposal<'_>, txs: &[Vec<u8>]) -> Sealed {
    let time = timestamp(proposal.time_ms);
    let last_commit = proposal
        .last
        .map(|b| b.commit.clone())
        .unwrap_or_else(|| pb::Commit {
            height: 0,
            round: 0,
            block_id: Some(no_block_id()),
            signatures: Vec::new(),
        });
    let tx_hashes: Vec<Vec<u8>> = txs.iter().map(|t| Sha256::digest(t).to_vec()).collect();
    let header = pb::Header {
        version: Some(Consensus {
            block: BLOCK_PROTOCOL,
            app: 0,
        }),
        chain_id: proposal.chain_id.to_owned(),
        height: proposal.height,
        time: Some(time),
        last_block_id: Some(proposal.last.map_or_else(no_block_id, |b| b.id.clone())),
        last_commit_hash: merkle_root(
            &last_commit
                .signatures
                .iter()
                .map(Message::encode_to_vec)
                .collect::<Vec<_>>(),
        ),
        data_hash: merkle_root(&tx_hashes),
        validators_hash: validator.set_hash(),
        next_validators_hash: validator.set_hash(),
        consensus_hash: consensus_hash(),
        app_hash: proposal.app_hash,
        last_results_hash: proposal.last_results_hash,
        evidence_hash: merkle_root::<Vec<u8>>(&[]),
        proposer_address: validator.address(),
    };
    let block = pb::Block {
        header: Some(header.clone()),
        data: Some(pb::Data { txs: txs.to_vec() }),
        evidence: Some(pb::EvidenceList::default()),
        last_commit: Some(last_commit.clone()),
    }
    .encode_to_vec();
    let parts: Vec<&[u8]> = block.chunks(PART_SIZE).collect();
    let id = pb::BlockId {
        hash: header_hash(&header),
        part_set_header: Some(pb::PartSetHeader {
            total: parts.len() as u32,
            hash: merkle_root(&parts),
        }),
    };
    let commit = pb::Commit {
        height: proposal.height,
        round: 0,
        block_id: Some(id.clone()),
        signatures: vec![validator.precommit(proposal.chain_id, proposal.height, &id, time)],
    };
    Sealed {
        header,
        id,
        last_commit,
        commit,
        size: block.len(),
    }
}

/// A Merkle proof that leaf `index` of `leaves` is under their root: the sibling hashes
/// from the leaf up (CometBFT's `aunts`), and the leaf's hash.
pub fn merkle_proof(leaves: &[impl AsRef<[u8]>], index: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    fn walk(leaves: &[&[u8]], index: usize, aunts: &mut Vec<Vec<u8>>) -> Vec<u8> {
        if leaves.len() == 1 {
            return leaf_hash(leaves[0]);
        }
        let split = leaves.len().next_power_of_two() / 2;
        let (left, right) = leaves.split_at(split);
        if index < split {
            let own = walk(left, index, aunts);
            aunts.push(merkle_root(right));
            own
        } else {
            let own = walk(right, index - split, aunts);
            aunts.push(merkle_root(left));
            own
        }
    }
    fn leaf_hash(leaf: &[u8]) -> Vec<u8> {
        Sha256::new()
            .chain_update([0u8])
            .chain_update(leaf)
            .finalize()
            .to_vec()
    }
    let leaves: Vec<&[u8]> = leaves.iter().map(AsRef::as_ref).collect();
    let mut aunts = Vec::new();
    let leaf = walk(&leaves, index, &mut aunts);
    (aunts, leaf)
}
