// The devnet through CosmJS, as a wallet or an integrator uses a Cosmos chain: the
// CometBFT 0.38 client it detects, the chain's height and balances, a send signed with a
// test mnemonic (gas by simulation), the transaction found again by hash and by event, a
// refusal, and a transaction of the market's decoded. Prints one JSON object.
//
// Environment: RPC (the devnet's URL), MNEMONIC, TO (the recipient), MEMO, SETTLEMENT (the
// hash of a payout the market signed).

const { StargateClient, SigningStargateClient, GasPrice } = require("@cosmjs/stargate");
const { DirectSecp256k1HdWallet, decodeTxRaw } = require("@cosmjs/proto-signing");
const { connectComet } = require("@cosmjs/tendermint-rpc");
const { MsgMultiSend } = require("cosmjs-types/cosmos/bank/v1beta1/tx");
const { TxRaw } = require("cosmjs-types/cosmos/tx/v1beta1/tx");

const { RPC, MNEMONIC, TO, MEMO, SETTLEMENT } = process.env;

// Events as plain data: CosmJS's attributes are {key, value}.
const plain = (events) =>
  events.map((e) => ({ type: e.type, attributes: e.attributes.map((a) => [a.key, a.value]) }));

async function main() {
  const out = {};

  const comet = await connectComet(RPC);
  out.comet = comet.constructor.name;
  const status = await comet.status();
  out.network = status.nodeInfo.network;
  out.latest = status.syncInfo.latestBlockHeight;
  const block = await comet.block(1);
  out.block1 = { height: block.block.header.height, txs: block.block.txs.length };
  out.blockResults = (await comet.blockResults(out.latest)).height;
  out.validators = (await comet.validators({})).total;
  out.commit = (await comet.commit(1)).canonical;
  out.abciHeight = (await comet.abciInfo()).lastBlockHeight;
  out.blockchain = (await comet.blockchain(1, 2)).blockMetas.length;

  const client = await StargateClient.connect(RPC);
  out.chainId = await client.getChainId();
  out.height = await client.getHeight();
  const wallet = await DirectSecp256k1HdWallet.fromMnemonic(MNEMONIC, { prefix: "cosmos" });
  const [account] = await wallet.getAccounts();
  out.address = account.address;
  out.before = (await client.getBalance(account.address, "uusdc")).amount;
  out.allBalances = await client.getAllBalances(account.address);

  const signer = await SigningStargateClient.connectWithSigner(RPC, wallet, {
    gasPrice: GasPrice.fromString("0.1uusdc"),
    broadcastPollIntervalMs: 200,
  });
  const amount = [{ denom: "uusdc", amount: "2500000" }];
  const sent = await signer.sendTokens(account.address, TO, amount, "auto", MEMO);
  out.sent = {
    code: sent.code,
    height: sent.height,
    hash: sent.transactionHash,
    gasWanted: String(sent.gasWanted),
    gasUsed: String(sent.gasUsed),
    events: plain(sent.events),
  };
  const tx = await client.getTx(sent.transactionHash);
  out.tx = { hash: tx.hash, height: tx.height, code: tx.code, events: plain(tx.events) };
  out.searched = (await client.searchTx([{ key: "transfer.recipient", value: TO }])).map((t) => t.hash);
  out.after = (await client.getBalance(account.address, "uusdc")).amount;
  out.received = (await client.getBalance(TO, "uusdc")).amount;
  out.sequence = (await client.getSequence(account.address)).sequence;

  // A transaction signed with a sequence already used: refused at CheckTx.
  const msg = {
    typeUrl: "/cosmos.bank.v1beta1.MsgSend",
    value: { fromAddress: account.address, toAddress: TO, amount },
  };
  const fee = { amount: [{ denom: "uusdc", amount: "20000" }], gas: "200000" };
  const stale = await signer.sign(account.address, [msg], fee, "", {
    accountNumber: (await client.getAccount(account.address)).accountNumber,
    sequence: 0,
    chainId: out.chainId,
  });
  try {
    await signer.broadcastTx(TxRaw.encode(stale).finish());
    out.refused = "accepted";
  } catch (e) {
    out.refused = { code: e.code, codespace: e.codespace, log: e.log };
  }

  // The market's payout, as CosmJS decodes it.
  const settlement = await client.getTx(SETTLEMENT);
  const decoded = decodeTxRaw(settlement.tx);
  const multi = MsgMultiSend.decode(decoded.body.messages[0].value);
  out.settlement = {
    code: settlement.code,
    typeUrl: decoded.body.messages[0].typeUrl,
    memo: decoded.body.memo,
    inputs: multi.inputs.map((i) => [i.address, i.coins.map((c) => c.amount + c.denom).join(",")]),
    outputs: multi.outputs.map((o) => [o.address, o.coins.map((c) => c.amount + c.denom).join(",")]),
    events: plain(settlement.events).map((e) => e.type),
  };

  client.disconnect();
  signer.disconnect();
  comet.disconnect();
  console.log(JSON.stringify(out));
}

// Exits at once: CosmJS's broadcastTx leaves its 60 s timer running when the broadcast is
// refused, which would keep Node alive that long.
main()
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
