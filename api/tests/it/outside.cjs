// Standard tooling against the running API, for `introspection.rs` and `dashboard.rs`:
//   node outside.cjs introspect URL SCHEMA_FILE          graphql-js's own introspection query
//   node outside.cjs graphiql BASE CHROMIUM SHOT         GraphiQL's docs explorer in Chromium
//   node outside.cjs dashboard BASE CHROMIUM SHOT KEY    the provider dashboard, key typed in
//   node outside.cjs trade WS_URL KEY                     graphql-ws places and cancels a bid
// Each prints one JSON document on standard output.
const fs = require("fs");
const [mode, target, extra, shot, key] = process.argv.slice(2);

async function introspect(url, schemaFile) {
  const g = require("graphql");
  const file = g.buildSchema(fs.readFileSync(schemaFile, "utf8"));
  // What a client that did not ask for the schema's own description must see.
  const withoutDescription = new g.GraphQLSchema({ ...file.toConfig(), description: undefined });
  // The defaults, and everything GraphiQL and other tools may ask for.
  const variants = [
    {},
    {
      descriptions: true,
      specifiedByUrl: true,
      directiveIsRepeatable: true,
      schemaDescription: true,
      inputValueDeprecation: true,
    },
  ];
  const results = [];
  for (const options of variants) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: g.getIntrospectionQuery(options) }),
    });
    const body = await response.json();
    if (body.errors) {
      results.push({ options, status: response.status, errors: body.errors });
      continue;
    }
    const served = g.printSchema(g.lexicographicSortSchema(g.buildClientSchema(body.data)));
    let published = g.printSchema(
      g.lexicographicSortSchema(options.schemaDescription ? file : withoutDescription)
    );
    if (!options.specifiedByUrl) {
      // Nor, unasked, each scalar's specification.
      published = published.replace(/ @specifiedBy\(url: "[^"]*"\)/g, "");
    }
    const a = served.split("\n");
    const b = published.split("\n");
    const line = a.findIndex((l, i) => l !== b[i]);
    results.push({
      options,
      status: response.status,
      equal: served === published,
      types: Object.keys(g.buildClientSchema(body.data).getTypeMap()).length,
      first_difference: line < 0 ? null : { served: a[line], published: b[line] },
    });
  }
  return results;
}

function launch(chromium) {
  const { chromium: browserType } = require("playwright-core");
  return browserType.launch({
    executablePath: chromium,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
}

async function graphiql(base, chromium) {
  const browser = await launch(chromium);
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    await page.goto(`${base}/graphql`);
    await page.getByRole("button", { name: /documentation explorer/i }).click();
    const explorer = page.locator(".graphiql-doc-explorer");
    await explorer.getByText("Root Types").waitFor({ timeout: 20000 });
    const roots = await explorer.innerText();
    // Into the query root: its fields are listed from the introspected schema.
    await explorer.getByRole("link", { name: "Query", exact: true }).first().click();
    await explorer.getByText("placeOrder").or(explorer.getByText("markets")).first().waitFor();
    const query = await explorer.innerText();
    await page.screenshot({ path: shot });
    return { roots, query, problems };
  } finally {
    await browser.close();
  }
}

async function dashboard(base, chromium) {
  const browser = await launch(chromium);
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1300 } });
    await page.goto(`${base}/dashboard`);
    await page.locator("#key").fill(key);
    await page.locator("#key").press("Enter");
    await page
      .locator('[data-loaded="true"], #error:not(:empty)')
      .first()
      .waitFor({ timeout: 20000 });
    // Live telemetry draws its chart after the first load.
    await page.waitForTimeout(1500);
    await page.screenshot({ path: shot, fullPage: true });
    return { html: await page.content(), url: page.url() };
  } finally {
    await browser.close();
  }
}

// The graphql-ws client (the protocol's reference implementation) over `ws`: one socket,
// authenticated in its init payload, places a bid and cancels it, as a bot would.
async function trade(url, apiKey) {
  const { createClient } = require("graphql-ws");
  const client = createClient({
    url,
    webSocketImpl: require("ws"),
    connectionParams: { apiKey },
    lazy: false,
    retryAttempts: 0,
  });
  const once = (query, variables) =>
    new Promise((resolve, reject) => {
      let result;
      client.subscribe(
        { query, variables },
        { next: (r) => (result = r), error: reject, complete: () => resolve(result) }
      );
    });
  try {
    const placed = await once(
      `mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { orderId status remaining } }`,
      {
        input: {
          market: "H100-80GB",
          clientOrderId: "9001",
          price: "1.25",
          gpus: 1,
          bid: { hours: 1 },
        },
      }
    );
    const id = placed.data && placed.data.placeOrder ? String(placed.data.placeOrder.orderId) : "0";
    const cancelled = await once(
      `mutation($id: ID!) { cancelOrder(orderId: $id) { orderId remaining } }`,
      { id }
    );
    return { placed, cancelled };
  } finally {
    await client.dispose();
  }
}

(async () => {
  const run = { introspect, graphiql, dashboard, trade }[mode];
  const result = await run(target, extra);
  console.log(JSON.stringify(result));
})().catch((e) => {
  console.log(JSON.stringify({ failed: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});
