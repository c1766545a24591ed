// What the browser tests share: the host under test (REBOUND_URL, started
// by host/rebound/tests/ui_test.rs), Debian's Chromium driven by
// playwright-core, and a few direct API calls for set-up.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const BASE = process.env.REBOUND_URL ?? "http://127.0.0.1:8080";
export const ADMIN_PASSWORD = process.env.REBOUND_ADMIN_PASSWORD ?? "";

/** Chromium as this machine allows it: headless, no sandbox (root), no
 * network of its own, a fresh profile. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "rebound-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.REBOUND_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1440, height: 900 },
    acceptDownloads: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(20_000);
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

export async function apiToken(username, password) {
  const r = await fetch(`${BASE}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!r.ok) throw new Error(`login as ${username}: ${r.status} ${await r.text()}`);
  return (await r.json()).access_token;
}

export async function api(token, method, path, body, headers = {}) {
  const r = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Wait until the run is in one of `statuses`. */
export async function waitRun(token, id, statuses, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const run = await api(token, "GET", `/runs/${id}`);
    if (statuses.includes(run.status)) return run;
    const done = ["succeeded", "failed", "cancelled"].includes(run.status);
    if (done || Date.now() > end) {
      const errors = run.steps.filter((s) => s.error).map((s) => `step ${s.seq} ${s.name}: ${s.error}`);
      throw new Error(`${run.workflow} run ${id} of ${run.plan} is ${run.status}, not ${statuses.join("/")}${errors.length ? `\n${errors.join("\n")}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Sign in through the sign-in page, with the keyboard only. */
export async function signIn(page, username, password) {
  await page.goto(`${BASE}/`);
  await page.getByLabel("Username").waitFor();
  await page.keyboard.type(username);
  await page.keyboard.press("Tab");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
}

export async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to Rebound" }).waitFor();
}

/** Follow a link of the main navigation. */
export async function go(page, name) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true }).click();
  await page.locator("main h1").first().waitFor();
}
