// The operator console in a real browser: headless Chromium (the system's), driven by
// Playwright, against an mcp-guard gateway with the console switched on. An
// administrator signs in with a one-time link, reads a failed server's reason, tests
// its connection, switches a tool off (an MCP client connected through the official
// TypeScript SDK is told list_changed and its next tools/list lacks the tool), reads
// the diff of a quarantined tool and approves it, approves a call that a flow rule
// holds for a person (the SDK client cannot be asked, so it waits), revokes the client's session (its
// next call is refused within 1 s) and finds the revocation in the audit trail. An
// auditor sees every page and every change it tries is refused with 403 and audited;
// a user without a console role gets 403.
//
// Usage: node console.mjs <mcp-guard binary> <artefact dir>
// Exit status 0 when every check passed. A screenshot of each page lands in the
// artefact directory, and each page is checked with axe-core (WCAG 2.1 A and AA).

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { check, freePort, launchChromium, snap as snapPage, summary } from "./common.mjs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [gatewayBin, artefacts] = process.argv.slice(2);
if (!gatewayBin || !artefacts) {
  console.error("usage: node console.mjs <mcp-guard binary> <artefact dir>");
  process.exit(2);
}
mkdirSync(artefacts, { recursive: true });
const started = Date.now();

async function until(what, f, ms = 10000) {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- the gateway ------------------------------------------------------------------------
const port = await freePort();
const gateway = `http://127.0.0.1:${port}`;
const work = mkdtempSync(path.join(os.tmpdir(), "mcp-guard-console-"));
const config = path.join(work, "gateway.toml");
const variant = path.join(work, "variant");
writeFileSync(variant, "base");
writeFileSync(
  config,
  `# The operators' gateway (comments survive the console's changes).
[gateway]
public_url = "${gateway}"

[auth.server]
durations = ["1d"]

[[auth.server.users]]
id = "root"
roles = ["admin"]

[[auth.server.users]]
id = "ann"
roles = ["auditor"]

[[auth.server.users]]
id = "eve"
roles = ["eng"]

[console]
enabled = true

[pinning]
mode = "enforce"

[[grants]]
roles = ["eng"]
names = ["*"]

[servers.alpha]
transport = "stdio"
description = "Alpha <script>document.title='pwned'</script>"
command = ${JSON.stringify(gatewayBin)}
args = ["fixture", "--name", "alpha", "--variant-file", ${JSON.stringify(variant)}]

[servers.ledger]
transport = "stdio"
description = "The ledger (its command is missing)"
command = "/nonexistent/ledger-mcp-server"

[servers.mailer]
transport = "stdio"
description = "Outgoing mail"
command = ${JSON.stringify(gatewayBin)}
args = ["fixture", "--name", "mailer", "--extra-tool", "send_mail"]

[[labels]]
servers = ["mailer"]
tools = ["send_mail"]
labels = ["egress"]

[[flow_rules]]
name = "mail-needs-approval"
calls = ["egress"]
approval = "required"

[approval]
approver_roles = ["admin"]

[endpoints.main]
description = "Engineering tools"
[endpoints.main.servers.alpha]
tools = ["*"]
[endpoints.main.servers.ledger]
tools = ["*"]
[endpoints.main.servers.mailer]
tools = ["*"]
`,
);
const cli = (...args) => execFileSync(gatewayBin, [...args, "--config", config], { encoding: "utf8" }).trim();
// Alpha's tools as they are now are approved; a later change waits for approval.
cli("tools", "approve", "--server", "alpha");
cli("tools", "approve", "--server", "mailer");
const token = cli("tokens", "issue", "--principal", "alice", "--role", "eng", "--duration", "1d");

const child = spawn(gatewayBin, ["serve", "--config", config, "--listen", `127.0.0.1:${port}`], {
  env: { ...process.env, MCP_GUARD_LOG: "info,rmcp=warn" },
  stdio: ["ignore", "ignore", "pipe"],
});
let log = "";
child.stderr.on("data", (d) => {
  log += d;
  if (process.env.E2E_VERBOSE) process.stderr.write(d);
});
await until("the gateway to listen", () => log.includes("upstreams started"), 60000).catch((e) => {
  console.error(log);
  throw e;
});

// ---- an MCP client (the official SDK) as alice -------------------------------------------
const endpointUrl = new URL(`${gateway}/mcp/main`);
const client = new Client({ name: "console-e2e", version: "1.0.0" });
let listChanged = 0;
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  listChanged += 1;
});
await client.connect(
  new StreamableHTTPClientTransport(endpointUrl, { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
);
const toolNames = async () => (await client.listTools()).tools.map((t) => t.name);

// ---- the browser --------------------------------------------------------------------------
const browser = await launchChromium();
let page;
const snap = (name, { on = page, ...opts } = {}) => snapPage(artefacts, on, name, opts);

/** A new browser context signed in as `user` through the console's sign-in redirect. */
async function signIn(user, at = "/console/servers") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await context.newPage();
  p.on("dialog", (d) => d.accept());
  await p.goto(`${gateway}${at}`);
  await p.waitForURL(/\/oauth\/signin/);
  await p.getByLabel("Sign-in link or code").fill(cli("users", "login-link", user));
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForLoadState();
  return { context, page: p };
}

let scriptRan = false;
try {
  // ---- the administrator ------------------------------------------------------------------
  ({ page } = await signIn("root"));
  page.on("console", (m) => {
    if (/pwned/.test(m.text())) scriptRan = true;
  });
  check("the admin lands on the Servers page after signing in", page.url() === `${gateway}/console/servers`, page.url());
  await until("the ledger server to have failed", async () => {
    await page.reload();
    return (await page.locator("#state-ledger").innerText()) === "failed";
  });
  const reason = await page.locator("#reason-ledger").innerText();
  check("a failed server's reason is shown", /could not be started/.test(reason) && /No such file/.test(reason), reason);
  check("a description holding script is shown as text", (await page.locator("#server-alpha .description").innerText()).includes("<script>"));
  check("and the script did not run", (await page.title()) !== "pwned" && !scriptRan);
  await snap("servers");

  await page.locator("#test-button-ledger").click();
  await page.waitForURL(/\/console\/servers$/);
  const tested = await page.locator("#test-ledger").innerText();
  check("testing the connection reports the failure again (nothing fixed)", /^Failed: .*No such file/.test(tested), tested);
  check("the result is shown at the top", /ledger: connection failed/.test(await page.locator("#notice").innerText()));
  await page.locator("#test-button-alpha").click();
  await page.waitForURL(/\/console\/servers$/);
  check("testing a working server connects and counts its tools", /^OK: connected .*tools/.test(await page.locator("#test-alpha").innerText()));
  await snap("servers-tested");

  // Switch a tool off: the client's next list lacks it, and it was told.
  const before = await toolNames();
  check("the client lists alpha__add at first", before.includes("alpha__add"), before.join(", "));
  await page.goto(`${gateway}/console/endpoints`);
  check("the tool is on", (await page.locator("#tool-main-alpha-add").innerText()) === "on");
  await snap("endpoints");
  const changedBefore = listChanged;
  await page.locator("#toggle-main-alpha-add").click();
  await page.waitForURL(/\/console\/endpoints$/);
  check("the page says the tool is off", (await page.locator("#tool-main-alpha-add").innerText()) === "off");
  await until("list_changed to reach the client", () => listChanged > changedBefore);
  const after = await toolNames();
  check("the client's next tools/list lacks the tool and it got list_changed", !after.includes("alpha__add") && after.includes("alpha__echo"), after.join(", "));
  const file = readFileSync(config, "utf8");
  check("the change is in the file, comments kept", file.includes('disabled_tools = ["add"]') && file.includes("# The operators' gateway"));
  await snap("endpoints-tool-off");

  // A tool's definition changes upstream: quarantined, then approved after its diff.
  writeFileSync(variant, "desc");
  await client.callTool({ name: "alpha__announce", arguments: {} });
  await until("echo to leave the client's list", async () => !(await toolNames()).includes("alpha__echo"));
  await page.goto(`${gateway}/console/approvals`);
  await until("the quarantined tool on the Approvals page", async () => {
    await page.reload();
    return (await page.locator("#held-alpha-echo").count()) > 0;
  });
  const diff = await page.locator("#held-alpha-echo pre.diff").innerText();
  check("the Approvals page shows the definition's diff", diff.includes("description") && diff.includes("politely"), diff);
  await snap("approvals");
  await page.locator("#approve-alpha-echo").click();
  await page.waitForURL(/\/console\/approvals$/);
  check("the approval is confirmed", /Approved alpha\/echo/.test(await page.locator("#notice").innerText()));
  await until("echo back in the client's list", async () => (await toolNames()).includes("alpha__echo"));
  const echo = await client.callTool({ name: "alpha__echo", arguments: { text: "approved" } });
  check("the approved tool answers", JSON.stringify(echo.content).includes("approved"));
  await snap("approvals-done");

  // A call a flow rule holds for a person's approval: the SDK client cannot be asked,
  // so the call waits; root (an approver) decides it on the Approvals page.
  const mail = { name: "mailer__send_mail", arguments: { text: "invoice <b>42</b>" } };
  let pending;
  try {
    await client.callTool(mail);
  } catch (e) {
    pending = e;
  }
  check("a call that needs approval is held", pending?.code === -32030 && pending?.data?.reason === "pending", String(pending));
  const approvalId = String(pending?.data?.approvalUrl).split("/").pop();
  await page.goto(`${gateway}/console/approvals`);
  const waiting = await page.locator(`#call-${approvalId}`).innerText();
  check(
    "the Approvals page lists the waiting call: tool, who, arguments, why",
    ["mailer__send_mail", "alice", "invoice <b>42</b>", "send data out", "mail-needs-approval"].every((t) => waiting.includes(t)),
    waiting,
  );
  await snap("approvals-call");
  await page.locator(`#approve-call-${approvalId}`).click();
  await page.waitForURL(/\/console\/approvals$/);
  check("the decision is confirmed", /^Approved/.test(await page.locator("#notice").innerText()));
  check("and the call no longer waits for a decision", (await page.locator(`#approve-call-${approvalId}`).count()) === 0);
  const sent = await client.callTool(mail);
  check("the approved call goes through", !sent.isError && JSON.stringify(sent.content).includes("invoice"), JSON.stringify(sent.content));
  await page.reload();
  check("nothing waits any more", (await page.locator("#no-calls").count()) === 1);

  // Revoke the client's session: its next call is refused within 1 s.
  await page.goto(`${gateway}/console/sessions`);
  const row = page.locator("tr", { hasText: "alice" }).first();
  check("alice's session is listed", (await row.count()) === 1);
  await snap("sessions");
  const t0 = Date.now();
  await row.getByRole("button", { name: "Revoke" }).click();
  let status = 0;
  for (;;) {
    const r = await fetch(endpointUrl, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/list", params: {} }),
    });
    status = r.status;
    if (status === 401 || status === 403 || Date.now() - t0 > 3000) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const took = Date.now() - t0;
  check("after Revoke the client's next call is refused within 1 s", (status === 401 || status === 403) && took < 1000, `${status} after ${took} ms`);
  await page.waitForURL(/\/console\/sessions$/);
  check("the revocation is confirmed", /Revoked the session of alice/.test(await page.locator("#notice").innerText()));
  await snap("sessions-revoked");

  // The audit trail has it.
  await page.goto(`${gateway}/console/audit`);
  await page.getByLabel("Principal").fill("alice");
  await page.getByLabel("Type").fill("session_revoked");
  await page.locator("#search").click();
  await page.waitForURL(/\/console\/audit\?/);
  const rows = await page.locator("tr.record").count();
  check("searching the audit by principal and type finds the revocation", rows === 1 && (await page.locator("tr.record td.type").first().innerText()) === "session_revoked");
  await page.getByLabel("Principal").fill("root");
  await page.getByLabel("Type").fill("console_action");
  await page.locator("#search").click();
  await page.waitForURL(/\/console\/audit\?/);
  const actions = await page.locator("tr.record td.type").allInnerTexts();
  check("and who did it, with every other change", ["toggle_tool", "approve_tool", "decide_call", "revoke_session", "test_connection"].every((a) => actions.some((t) => t.includes(a))), actions.join(", "));
  await page.locator("#verify").click();
  check("the chain is checked and intact", /^Intact/.test(await page.locator("#chain-status").innerText()));
  await snap("audit");
  await page.locator("tr.record td a").last().click();
  const record = await page.locator("#record").innerText();
  check("a record's detail is shown", record.includes('"type": "console_action"') && record.includes('"id": "root"'));
  await snap("audit-record");

  // The configuration: the last reload, and a proposed change checked against the trail.
  await page.goto(`${gateway}/console/config`);
  check("the last reload is shown", /applied: .*endpoints\.main/.test(await page.locator("#last-reload-result").innerText()));
  const current = await page.locator("#text").inputValue();
  await page.locator("#text").fill(current.replace('roles = ["eng"]\nnames = ["*"]', 'roles = ["eng"]\nnames = ["add"]'));
  await page.locator("#check").click();
  await page.waitForLoadState();
  const replay = await page.locator("#replay").innerText();
  check("checking a proposed change replays the recorded calls under it", /allowed -> refused/.test(replay) && /alpha\/echo/.test(replay), replay.slice(0, 300));
  await snap("config");

  // ---- the auditor: sees everything, changes nothing ------------------------------------------
  const auditor = await signIn("ann");
  page = auditor.page;
  for (const p of ["servers", "endpoints", "approvals", "sessions", "audit", "config"]) {
    const r = await page.goto(`${gateway}/console/${p}`);
    check(`the auditor sees the ${p} page`, r.status() === 200 && (await page.locator("h1").innerText()).length > 0);
  }
  await page.goto(`${gateway}/console/endpoints`);
  check("the auditor's buttons are disabled", await page.locator("#toggle-main-alpha-echo").isDisabled());
  await snap("auditor-endpoints");
  const fileBefore = readFileSync(config, "utf8");
  // Enable the button through DevTools and submit the real form anyway.
  await page.$eval("#toggle-main-alpha-echo", (b) => (b.disabled = false));
  const [submitted] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/console/endpoints/toggle")), page.locator("#toggle-main-alpha-echo").click()]);
  check("the auditor's change is refused with 403", submitted.status() === 403);
  await snap("auditor-refused");
  const form = async (p) => {
    await page.goto(`${gateway}/console/${p}`);
    return page.locator('input[name="csrf"]').first().inputValue();
  };
  const csrf = await form("endpoints");
  const digest = await page.locator('input[name="digest"]').first().inputValue();
  const attempts = [
    ["servers/test", { server: "ledger" }],
    ["endpoints/redaction", { endpoint: "main", direction: "responses", on: "true", digest }],
    ["approvals/approve", { server: "alpha", tool: "echo", pin: "sha256:0" }],
    ["approvals/reject", { server: "alpha", tool: "echo", digest }],
    ["sessions/revoke", { session: "anything" }],
    ["config/apply", { text: fileBefore, digest }],
  ];
  for (const [p, fields] of attempts) {
    const r = await auditor.context.request.post(`${gateway}/console/${p}`, { form: { csrf, ...fields }, headers: { origin: gateway } });
    check(`the auditor's POST ${p} is refused with 403`, r.status() === 403, String(r.status()));
  }
  check("nothing changed in the file", readFileSync(config, "utf8") === fileBefore);
  await auditor.context.close();

  // The admin finds each refusal in the audit trail.
  page = (await browser.contexts())[0].pages()[0];
  await page.goto(`${gateway}/console/audit?principal=ann&outcome=denied&type=console_action`);
  const refused = await page.locator("tr.record").count();
  check("each refused change of the auditor is audited", refused === attempts.length + 1, `${refused} records`);
  await snap("audit-auditor-refusals");

  // ---- a user without a console role ----------------------------------------------------------
  const eve = await signIn("eve");
  const r = await eve.page.goto(`${gateway}/console/servers`);
  check("a non-admin gets 403", r.status() === 403 && /holds neither the admin nor the auditor role/.test(await eve.page.locator("main").innerText()));
  await snap("non-admin", { on: eve.page });
  await eve.context.close();
  check("no injected script ran on any page", !scriptRan);
} catch (e) {
  await snap("failure", { audit: false }).catch(() => {});
  console.error(e);
  if (process.env.E2E_VERBOSE) console.error(log);
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
  await client.close().catch(() => {});
  child.kill("SIGTERM");
}
summary("console e2e", started);
if (process.exitCode) process.exit(process.exitCode);
