// End to end in a real browser: headless Chromium (the system's), driven by
// Playwright, connects the official TypeScript SDK client to an mcp-guard endpoint
// through the gateway's built-in authorization server. The user signs in with a
// one-time link, consents with a 1-day duration, completes a personal OAuth
// credential against a second, OAuth-protected MCP server (another mcp-guard with its
// own authorization server) and pastes a personal bearer token. The SDK client then
// lists and calls the endpoint's tools. A call that a flow rule sends for a person's
// approval (the client cannot elicit) returns a link; alice approves it on the
// gateway's approval page and the call goes through. Then `sessions revoke` ends the
// grant, and a page that frames the sign-in page shows nothing.
//
// Usage: node e2e.mjs <mcp-guard binary> <artefact dir>
// Exit status 0 when every check passed. Screenshots of each page land in the
// artefact directory.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { check, freePort, launchChromium, snap as snapPage, summary } from "./common.mjs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [gatewayBin, artefacts] = process.argv.slice(2);
if (!gatewayBin || !artefacts) {
  console.error("usage: node e2e.mjs <mcp-guard binary> <artefact dir>");
  process.exit(2);
}
mkdirSync(artefacts, { recursive: true });
const started = Date.now();

const children = [];
async function startGateway(dir, toml, port) {
  const config = path.join(dir, "gateway.toml");
  writeFileSync(config, toml);
  const child = spawn(gatewayBin, ["serve", "--config", config, "--listen", `127.0.0.1:${port}`], {
    env: { ...process.env, MCP_GUARD_LOG: "info,rmcp=warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  children.push(child);
  let log = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${log}`)), 30000);
    child.stderr.on("data", (d) => {
      log += d;
      if (log.includes("mcp-guard listening on")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", (code) => reject(new Error(`gateway exited ${code}:\n${log}`)));
  });
  child.stderr.on("data", (d) => {
    if (process.env.E2E_VERBOSE) process.stderr.write(d);
  });
  return config;
}

function cli(config, ...args) {
  return execFileSync(gatewayBin, [...args, "--config", config], { encoding: "utf8" }).trim();
}

function fixtureTable(name, extra = "") {
  return `[servers.${name}]\ntransport = "stdio"\n${extra}command = ${JSON.stringify(gatewayBin)}\nargs = ["fixture", "--name", "${name}"]\n\n`;
}

// ---- the two gateways ----------------------------------------------------------------
const [providerPort, gatewayPort, clientPort] = await Promise.all([freePort(), freePort(), freePort()]);
const provider = `http://127.0.0.1:${providerPort}`;
const gateway = `http://127.0.0.1:${gatewayPort}`;
const work = mkdtempSync(path.join(os.tmpdir(), "mcp-guard-e2e-"));
mkdirSync(path.join(work, "provider"));
mkdirSync(path.join(work, "gateway"));

// The OAuth-protected upstream: another mcp-guard whose authorization server signs
// alice in and lets her approve the first gateway as a client.
const providerConfig = await startGateway(
  path.join(work, "provider"),
  `[gateway]\npublic_url = "${provider}"\n\n[auth.server]\ndurations = ["1d"]\n\n` +
    `[[auth.server.users]]\nid = "alice"\nroles = ["eng"]\n\n` +
    `[[grants]]\nroles = ["eng"]\nnames = ["*"]\n\n` +
    fixtureTable("notes") +
    `[endpoints.notes]\ndescription = "Alice's notes (upstream provider)"\nnamespace = false\n[endpoints.notes.servers.notes]\ntools = ["*"]\n`,
  providerPort,
);

const gatewayConfig = await startGateway(
  path.join(work, "gateway"),
  `[gateway]\npublic_url = "${gateway}"\n\n[auth.server]\ndurations = ["1h", "1d", "30d"]\n\n` +
    `[[auth.server.users]]\nid = "alice"\nroles = ["eng"]\n\n` +
    `[[grants]]\nroles = ["eng"]\nnames = ["*"]\n\n` +
    fixtureTable("alpha") +
    fixtureTable("desk", `description = "Service desk (personal API token)"\npersonal = ["DESK_TOKEN"]\nenv = { DESK_TOKEN = "\${DESK_TOKEN}" }\n`) +
    `[servers.notes]\ntransport = "http"\nurl = "${provider}/mcp/notes"\ndescription = "Notes (personal OAuth)"\n` +
    `[servers.notes.oauth]\nmode = "personal"\n\n` +
    `[servers.mailer]\ntransport = "stdio"\ncommand = ${JSON.stringify(gatewayBin)}\nargs = ["fixture", "--name", "mailer", "--extra-tool", "send_mail"]\n\n` +
    `[[labels]]\nservers = ["mailer"]\ntools = ["send_mail"]\nlabels = ["egress"]\n\n` +
    `[[flow_rules]]\nname = "mail-needs-approval"\ncalls = ["egress"]\napproval = "required"\n\n` +
    `[endpoints.main]\ndescription = "Engineering tools"\n` +
    `[endpoints.main.servers.alpha]\ntools = ["*"]\n[endpoints.main.servers.desk]\ntools = ["*"]\n[endpoints.main.servers.notes]\ntools = ["*"]\n` +
    `[endpoints.main.servers.mailer]\ntools = ["*"]\n`,
  gatewayPort,
);

// ---- the client's redirect target and a framing page ----------------------------------
let codeArrived;
const codePromise = new Promise((r) => (codeArrived = r));
const clientServer = http.createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${clientPort}`);
  if (url.pathname === "/callback") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>Connected</title><h1>Authorization complete</h1><p>You can close this window.</p>");
    codeArrived(url.searchParams);
  } else if (url.pathname === "/frame") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><title>Framing attempt</title><h1>A page framing the gateway</h1><iframe id="f" src="${gateway}/oauth/signin" width="600" height="400"></iframe>`);
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((r) => clientServer.listen(clientPort, "127.0.0.1", r));

// ---- the official SDK client, with an OAuth provider that hands the URL to the browser
const redirectUrl = `http://127.0.0.1:${clientPort}/callback`;
let authorizationUrl;
const store = {};
const authProvider = {
  get redirectUrl() {
    return redirectUrl;
  },
  get clientMetadata() {
    return {
      client_name: "Playwright e2e client",
      redirect_uris: [redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  clientInformation: () => store.client,
  saveClientInformation: (c) => (store.client = c),
  tokens: () => store.tokens,
  saveTokens: (t) => (store.tokens = t),
  redirectToAuthorization: (u) => (authorizationUrl = u),
  saveCodeVerifier: (v) => (store.verifier = v),
  codeVerifier: () => store.verifier,
};

const endpointUrl = new URL(`${gateway}/mcp/main`);
let transport = new StreamableHTTPClientTransport(endpointUrl, { authProvider });
let client = new Client({ name: "playwright-e2e", version: "1.0.0" });
let needsAuth = false;
try {
  await client.connect(transport);
} catch (e) {
  needsAuth = e.constructor.name === "UnauthorizedError" || /nauthorized/.test(String(e));
}
check("the SDK discovers the gateway's authorization server and asks for authorization", needsAuth && !!authorizationUrl, String(authorizationUrl));
check("the authorization request uses PKCE S256 and names the endpoint as resource",
  authorizationUrl.searchParams.get("code_challenge_method") === "S256" &&
    authorizationUrl.searchParams.get("resource") === `${gateway}/mcp/main`);

// ---- the browser ------------------------------------------------------------------------
const browser = await launchChromium();
const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
const snap = (name, opts) => snapPage(artefacts, page, name, opts);

try {
  await page.goto(authorizationUrl.toString());
  check("an unsigned user is asked to sign in", (await page.locator("h1").innerText()).includes("Sign in"));
  await snap("sign-in");
  await page.getByLabel("Sign-in link or code").fill(cli(gatewayConfig, "users", "login-link", "alice"));
  await page.getByRole("button", { name: "Sign in" }).click();

  await page.waitForURL(/\/oauth\/consent/);
  const consent = await page.locator("main").innerText();
  check("the consent page names the client, its redirect URI, the endpoint and its tools",
    consent.includes("Playwright e2e client") && consent.includes(redirectUrl) && consent.includes("/mcp/main") && consent.includes("alpha__echo"));
  await page.getByLabel("1 day").check();
  await snap("consent");
  await page.getByRole("button", { name: "Allow" }).click();

  await page.waitForURL(/\/oauth\/connect/);
  check("personal credentials are listed with their state",
    (await page.locator("#state-notes").innerText()) === "Needs sign-in" && (await page.locator("#state-desk").innerText()) === "Needs a token");
  check("continuing is not possible yet", await page.locator("#continue").isDisabled());
  await snap("personal-credentials");

  // Personal OAuth: the gateway's own consent, then the provider's sign-in and consent.
  await page.locator("#connect-notes").click();
  await page.waitForLoadState();
  await snap("upstream-consent");
  const approve = page.getByRole("button", { name: /allow|approve|continue/i }).first();
  if (await approve.count()) await approve.click();
  await page.waitForURL(new RegExp(`^${provider.replace(/[.]/g, "\\.")}`));
  await snap("provider-sign-in");
  await page.getByLabel("Sign-in link or code").fill(cli(providerConfig, "users", "login-link", "alice"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/oauth\/consent/);
  await snap("provider-consent");
  await page.getByRole("button", { name: "Allow" }).click();
  await page.waitForURL(new RegExp(`^${gateway.replace(/[.]/g, "\\.")}/oauth/connect`));
  check("the personal OAuth credential is done", (await page.locator("#state-notes").innerText()) === "Done");
  await snap("oauth-done");

  // Personal bearer token.
  await page.getByLabel("DESK_TOKEN").fill("alice-desk-token-42");
  await page.getByRole("button", { name: "Save token" }).click();
  await page.waitForURL(/\/oauth\/connect/);
  check("the personal token is done and continuing is possible",
    (await page.locator("#state-desk").innerText()) === "Done" && !(await page.locator("#continue").isDisabled()));
  await snap("all-done");
  await page.locator("#continue").click();
  const params = await codePromise;
  await page.waitForLoadState();
  await snap("done", { audit: false }); // the client's own page
  check("the client receives a code, its state and the issuer", !!params.get("code") && params.get("iss") === gateway);

  // The SDK finishes the flow and connects.
  await transport.finishAuth(params.get("code"));
  check("the access token lasts at most the chosen day", store.tokens.expires_in <= 86400, `expires_in ${store.tokens.expires_in}`);
  transport = new StreamableHTTPClientTransport(endpointUrl, { authProvider });
  client = new Client({ name: "playwright-e2e", version: "1.0.0" });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  check("the SDK client lists the endpoint's tools", ["alpha__echo", "desk__getenv", "notes__echo"].every((n) => tools.includes(n)), tools.join(", "));
  const echo = await client.callTool({ name: "alpha__echo", arguments: { text: "hello from the browser flow" } });
  check("a tool call works", JSON.stringify(echo.content).includes("hello from the browser flow"));
  const remote = await client.callTool({ name: "notes__echo", arguments: { text: "through alice's own OAuth token" } });
  check("a call reaches the OAuth-protected upstream with alice's credential",
    !remote.isError && JSON.stringify(remote.content).includes("through alice's own OAuth token"), JSON.stringify(remote.content));
  const desk = await client.callTool({ name: "desk__getenv", arguments: { name: "DESK_TOKEN" } });
  check("alice's personal token reached her desk process (scrubbed on the way back)", JSON.stringify(desk.content).includes("[REDACTED_SECRET]"), JSON.stringify(desk.content));

  // Approval on the gateway's page: the SDK client declares no elicitation, so the call
  // answers with a link; alice (signed in already) approves; the same call goes through.
  let pending;
  try {
    await client.callTool({ name: "mailer__send_mail", arguments: { text: "weekly report" } });
  } catch (e) {
    pending = e;
  }
  const approvalUrl = pending?.data?.approvalUrl;
  check("a call that needs approval answers with a link to the approval page",
    pending?.code === -32030 && pending?.data?.reason === "pending" && String(approvalUrl).startsWith(`${gateway}/approvals/`),
    String(pending));
  await page.goto(approvalUrl);
  const shown = await page.locator("main").innerText();
  check("the approval page shows the tool, its arguments and why", shown.includes("mailer__send_mail") && shown.includes("weekly report") && shown.includes("send data out"), shown.slice(0, 200));
  await snap("approval");
  await page.getByRole("button", { name: "Approve this call" }).click();
  await page.waitForLoadState();
  check("the decision is recorded", (await page.locator("main").innerText()).includes("Approved"));
  await snap("approval-recorded");
  const sent = await client.callTool({ name: "mailer__send_mail", arguments: { text: "weekly report" } });
  check("the approved call goes through", !sent.isError && JSON.stringify(sent.content).includes("weekly report"), JSON.stringify(sent.content));

  // Revocation: `sessions revoke` from another process; the next call gets 401 within 1 s.
  const sessions = cli(gatewayConfig, "sessions", "list", "--json").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const session = sessions.find((s) => s.state === "active" && s.credential.startsWith("grant:"));
  check("the grant is a gateway session", !!session);
  const token = store.tokens.access_token;
  const t0 = Date.now();
  cli(gatewayConfig, "sessions", "revoke", session.id);
  let status = 0;
  for (;;) {
    const r = await fetch(endpointUrl, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "e2e", version: "0" } } }),
    });
    status = r.status;
    if (status === 401 || Date.now() - t0 > 3000) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const took = Date.now() - t0;
  check("after sessions revoke the next call is refused with 401 within 1 s", status === 401 && took < 1000, `${status} after ${took} ms`);

  // Framing: the sign-in page refuses to render inside another site's frame.
  await page.goto(`http://127.0.0.1:${clientPort}/frame`);
  await page.waitForTimeout(500);
  const frame = page.frames().find((f) => f !== page.mainFrame());
  let framedText = "";
  try {
    framedText = frame ? await frame.locator("body").innerText({ timeout: 1000 }) : "";
  } catch {
    framedText = "";
  }
  await snap("framing-blocked", { audit: false });
  check("a page framing the gateway shows nothing of it", !framedText.includes("Sign in"), JSON.stringify(framedText.slice(0, 80)));
} catch (e) {
  await snap("failure", { audit: false }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  await client.close().catch(() => {});
  clientServer.close();
  for (const c of children) c.kill("SIGTERM");
}
summary("browser e2e", started);
if (process.exitCode) process.exit(process.exitCode);
