// What the browser suites (e2e.mjs, console.mjs) share: named checks that stop the run
// at the first failure, a free loopback port, the system Chromium, and a screenshot of
// a page checked with axe-core (WCAG 2.1 A and AA).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { chromium } from "playwright-core";

export const checks = [];

export function check(name, ok, detail = "") {
  checks.push({ name, ok });
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  if (!ok) throw new Error(`check failed: ${name} ${detail}`);
}

/** Prints `<suite>: passed/total checks passed in N s`. */
export function summary(suite, started) {
  const passed = checks.filter((c) => c.ok).length;
  console.log(`${suite}: ${passed}/${checks.length} checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Headless Chromium: `$CHROMIUM` or Debian's `/usr/bin/chromium`. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
let shot = 0;

/**
 * Screenshots `page` into `artefacts` (numbered in order) and, unless `audit` is false,
 * checks it with axe-core. The script is evaluated through the DevTools protocol, which
 * the pages' strict Content-Security-Policy does not govern.
 */
export async function snap(artefacts, page, name, { audit = true } = {}) {
  shot += 1;
  const file = path.join(artefacts, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`     screenshot ${file}`);
  if (!audit) return;
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    globalThis.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  const problems = result.violations.map((v) => `${v.id} (${v.nodes.length}): ${v.help} ${v.nodes.map((n) => n.target).join(" ")}`);
  check(`page "${name}" has no accessibility violations`, problems.length === 0, problems.join("; "));
}
