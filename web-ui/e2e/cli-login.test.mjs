// `rebound login --oidc` against the lab's OpenID provider (node-oidc-provider,
// e2e/idp.mjs) and a real host: the CLI prints the issuer's address, Chromium
// signs in there, the issuer sends the browser back to the CLI's loopback port
// with the code, and the host redeems it (the address printed, or opened in
// the system browser through $BROWSER). The next command renews the stored
// session with the issuer's refresh token (its access tokens live 20 s). With
// `--device`, the user enters a code at the issuer instead (RFC 8628).
// REBOUND_BIN names the CLI (host/rebound/tests/ui_test.rs passes it).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ADMIN_PASSWORD, BASE, api, apiToken, launch } from "./harness.mjs";

const BIN = process.env.REBOUND_BIN;

/** Run the CLI; `onLine` sees each line of its stderr as it comes. */
function cli(args, credentials, onLine = () => {}, extraEnv = {}) {
  const env = { ...process.env, ...extraEnv, REBOUND_SERVER: BASE, REBOUND_CREDENTIALS: credentials };
  delete env.REBOUND_TOKEN;
  const child = spawn(BIN, args, { env });
  let stdout = "";
  let stderr = "";
  let pending = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => {
    stderr += d;
    pending += d;
    const lines = pending.split("\n");
    pending = lines.pop();
    lines.forEach(onLine);
  });
  const done = new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** `rebound login --oidc --no-browser`: the address it prints, and its end. */
async function startLogin(credentials) {
  let found;
  const address = new Promise((resolve) => (found = resolve));
  const login = cli(["login", "--oidc", "--no-browser"], credentials, (line) => {
    const m = line.match(/^\s+(http:\/\/127\.0\.0\.1:\d+\/\S+)$/);
    if (m) found(m[1]);
  });
  const url = await Promise.race([
    address,
    login.done.then((r) => {
      throw new Error(`rebound login ended before printing an address: ${r.code} ${r.stderr}`);
    }),
  ]);
  return { url: new URL(url), done: login.done };
}

/** Sign in on node-oidc-provider's own login and consent pages. */
async function throughIdp(tab, url, login) {
  await tab.goto(url.href);
  await tab.locator("input[name=login]").fill(login);
  await tab.locator("input[name=password]").fill("any");
  await tab.locator("button[type=submit]").click();
  await tab.getByRole("button", { name: "Continue" }).click();
}

/** In Chromium: sign in at the issuer's address, until it sends the browser back to the CLI. */
async function signInAtIdp(url, login) {
  const browser = await launch();
  try {
    const tab = await browser.context.newPage();
    await throughIdp(tab, url, login);
    await tab.getByText("go back to the command line").waitFor();
  } finally {
    await browser.close();
  }
}

describe("rebound login --oidc", () => {
  let dir;
  let admin;

  before(async () => {
    assert.ok(BIN, "REBOUND_BIN names the rebound binary");
    dir = mkdtempSync(join(tmpdir(), "rebound-cli-login-"));
    admin = await apiToken("admin", ADMIN_PASSWORD);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  test("signs in through the issuer in a browser, and renews the session with its refresh token", async () => {
    const credentials = join(dir, "olivia.json");
    const { url, done } = await startLogin(credentials);
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    assert.equal(url.searchParams.get("client_id"), "rebound-ui");
    const redirect = new URL(url.searchParams.get("redirect_uri"));
    assert.equal(redirect.hostname, "127.0.0.1");
    assert.equal(redirect.pathname, "/callback");

    // Not the issuer's answer to this sign-in: refused, and the CLI waits on.
    const stray = await fetch(`${redirect.href}?code=forged&state=not-this-one`);
    assert.equal(stray.status, 400);

    await signInAtIdp(url, "olivia");
    const login = await done;
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stderr, /logged in to .* as oidc:olivia@http:\/\/127\.0\.0\.1:\d+ \(operator\) through Lab IdP/);
    const first = JSON.parse(readFileSync(credentials, "utf8"));
    assert.ok(first.oidc?.refresh_token, "the issuer's refresh token is kept");
    assert.equal(first.oidc.issuer, url.origin);

    // The token expires within a quarter hour (20 s here), so the next
    // command renews it first: a new token, and the rotated refresh token.
    const plans = await cli(["get", "plans", "-o", "json"], credentials).done;
    assert.equal(plans.code, 0, plans.stderr);
    assert.ok(Array.isArray(JSON.parse(plans.stdout).items), plans.stdout);
    const renewed = JSON.parse(readFileSync(credentials, "utf8"));
    assert.notEqual(renewed.token, first.token);
    assert.notEqual(renewed.oidc.refresh_token, first.oidc.refresh_token);

    // Back after the access token expired (as the file says): the refresh
    // token outlives it, so the command renews the session all the same.
    writeFileSync(credentials, JSON.stringify({ ...renewed, expires_at: Math.floor(Date.now() / 1000) - 60 }));
    const later = await cli(["get", "plans", "-o", "json"], credentials).done;
    assert.equal(later.code, 0, later.stderr);
    const again = JSON.parse(readFileSync(credentials, "utf8"));
    assert.notEqual(again.token, renewed.token);
    assert.ok(again.expires_at > Date.now() / 1000);

    const audit = JSON.stringify(await api(admin, "GET", "/audit"));
    assert.match(audit, /auth\.login/);
    assert.match(audit, /auth\.refresh/);
    assert.ok(!audit.includes(first.oidc.refresh_token), "no refresh token in the audit log");
  });

  test("opens the issuer's address in the system browser ($BROWSER)", async () => {
    const credentials = join(dir, "browser.json");
    const opened = join(dir, "opened.txt");
    const script = join(dir, "browser.sh");
    // The "system browser": a command that hands the address to the test.
    writeFileSync(script, `#!/bin/sh\nprintf '%s' "$1" > '${opened}'\n`, { mode: 0o755 });
    const login = cli(["login", "--oidc"], credentials, () => {}, { BROWSER: script });
    let ended = null;
    login.done.then((r) => (ended = r));
    while (!existsSync(opened) || readFileSync(opened, "utf8") === "") {
      if (ended) assert.fail(`rebound login ended before opening a browser: ${ended.code} ${ended.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const url = new URL(readFileSync(opened, "utf8"));
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    await signInAtIdp(url, "olivia");
    const result = await login.done;
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /no browser could be opened/);
    assert.match(result.stderr, /logged in to .* as oidc:olivia@/);
  });

  test("signs in with a code entered at the issuer (device authorization grant)", async () => {
    const credentials = join(dir, "device.json");
    let found;
    const address = new Promise((resolve) => (found = resolve));
    let userCode;
    const login = cli(["login", "--oidc", "--device"], credentials, (line) => {
      const code = line.match(/^\s+([A-Z]{4}-?[A-Z]{4})$/);
      if (code) userCode = code[1];
      const m = line.match(/^\(or open (\S+), which carries the code\)$/);
      if (m) found(m[1]);
    });
    const url = await Promise.race([
      address,
      login.done.then((r) => {
        throw new Error(`rebound login ended before printing an address: ${r.code} ${r.stderr}`);
      }),
    ]);
    assert.ok(userCode, "the user code is printed for typing in elsewhere");
    const browser = await launch();
    try {
      const tab = await browser.context.newPage();
      // node-oidc-provider's own pages: the code to confirm, then its login
      // and consent, then its success page.
      await tab.goto(url);
      await tab.getByRole("heading", { name: "Confirm Device" }).waitFor();
      assert.match(await tab.locator("code").innerText(), new RegExp(userCode.replace("-", "-?")));
      await tab.getByRole("button", { name: "Continue" }).click();
      await tab.locator("input[name=login]").fill("olivia");
      await tab.locator("input[name=password]").fill("any");
      await tab.locator("button[type=submit]").click();
      await tab.getByRole("button", { name: "Continue" }).click();
      await tab.getByRole("heading", { name: "Sign-in Success" }).waitFor();
    } finally {
      await browser.close();
    }
    const done = await login.done;
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stderr, /logged in to .* as oidc:olivia@http:\/\/127\.0\.0\.1:\d+ \(operator\) through Lab IdP/);
    const saved = JSON.parse(readFileSync(credentials, "utf8"));
    assert.ok(saved.oidc?.refresh_token, "the issuer's refresh token is kept");
    const plans = await cli(["get", "plans", "-o", "json"], credentials).done;
    assert.equal(plans.code, 0, plans.stderr);
    const audit = JSON.stringify(await api(admin, "GET", "/audit"));
    assert.match(audit, /device_code/, "the device sign-in is audited as such");
  });

  test("says why a user the issuer gives no Rebound role is refused, and keeps no session", async () => {
    const credentials = join(dir, "mallory.json");
    const { url, done } = await startLogin(credentials);
    const browser = await launch();
    try {
      const tab = await browser.context.newPage();
      await throughIdp(tab, url, "mallory");
      await tab.getByText("go back to the command line").waitFor();
    } finally {
      await browser.close();
    }
    const login = await done;
    assert.notEqual(login.code, 0);
    assert.match(login.stderr, /no Rebound role/);
    assert.throws(() => readFileSync(credentials), /ENOENT/);
  });
});
