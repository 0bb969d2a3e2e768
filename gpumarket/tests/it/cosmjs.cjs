// A buyer and an integrator on the market's chain with CosmJS. Prints one JSON object.
//
// `deposit`: reads the height and the wallet's balance, then sends AMOUNT uusdc to ESCROW
// with the buyer's account id as memo, signed with MNEMONIC (gas by simulation).
// `inspect`: finds the market's settlement transaction SETTLEMENT by hash and, by the
// escrow's `message.sender` events, every transaction the escrow signed.
//
// Environment: RPC (the chain's URL), MNEMONIC, ESCROW, MEMO, AMOUNT, SETTLEMENT.

const { StargateClient, SigningStargateClient, GasPrice } = require("@cosmjs/stargate");
const { DirectSecp256k1HdWallet } = require("@cosmjs/proto-signing");

const { RPC, MNEMONIC, ESCROW, MEMO, AMOUNT, SETTLEMENT } = process.env;

const plain = (events) =>
  events.map((e) => ({ type: e.type, attributes: e.attributes.map((a) => [a.key, a.value]) }));

async function deposit() {
  const client = await StargateClient.connect(RPC);
  const wallet = await DirectSecp256k1HdWallet.fromMnemonic(MNEMONIC, { prefix: "cosmos" });
  const [account] = await wallet.getAccounts();
  const out = {
    height: await client.getHeight(),
    address: account.address,
    before: (await client.getBalance(account.address, "uusdc")).amount,
  };
  const signer = await SigningStargateClient.connectWithSigner(RPC, wallet, {
    gasPrice: GasPrice.fromString("0.05uusdc"),
    broadcastPollIntervalMs: 200,
  });
  const sent = await signer.sendTokens(
    account.address,
    ESCROW,
    [{ denom: "uusdc", amount: AMOUNT }],
    "auto",
    MEMO,
  );
  out.code = sent.code;
  out.hash = sent.transactionHash;
  out.height = sent.height;
  out.after = (await client.getBalance(account.address, "uusdc")).amount;
  signer.disconnect();
  client.disconnect();
  return out;
}

async function inspect() {
  const client = await StargateClient.connect(RPC);
  const tx = await client.getTx(SETTLEMENT);
  const signed = await client.searchTx([{ key: "message.sender", value: ESCROW }]);
  client.disconnect();
  return {
    settlement: { hash: tx.hash, code: tx.code, height: tx.height, events: plain(tx.events) },
    signed: signed.map((t) => t.hash),
  };
}

const modes = { deposit, inspect };
modes[process.argv[2]]()
  .then((out) => console.log(JSON.stringify(out)))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
