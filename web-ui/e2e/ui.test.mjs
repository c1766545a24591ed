// The admin web UI against a real host with the lab: one scenario, in
// order, as an admin and then a viewer would use it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { ADMIN_PASSWORD, BASE, api, apiToken, go, launch, signIn, signOut, waitRun } from "./harness.mjs";

const LAB_B_ENDPOINT = process.env.LAB_B_ENDPOINT;
const LAB_B_TOKEN = process.env.LAB_B_TOKEN;

describe("the admin web UI", () => {
  let browser;
  let page;
  let admin;

  before(async () => {
    assert.ok(LAB_B_ENDPOINT && LAB_B_TOKEN, "LAB_B_ENDPOINT and LAB_B_TOKEN name the lab site to register");
    browser = await launch();
    page = await browser.context.newPage();
    admin = await apiToken("admin", ADMIN_PASSWORD);
  });

  after(async () => {
    await browser?.close();
  });

  test("is served by the host, with the API it was built against", async () => {
    const res = await fetch(`${BASE}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy") ?? "", /script-src 'self'/);
    assert.match(await res.text(), /<div id="root">/);
  });

  test("signs in with the keyboard after refusing a wrong password", async () => {
    await page.goto(`${BASE}/`);
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill("not-the-password");
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor();
    assert.match(await alert.innerText(), /Sign-in refused/);
    await signIn(page, "admin", ADMIN_PASSWORD);
    assert.match(await page.locator(".topbar").innerText(), /user:admin\s*\(admin\)/);
    const nav = await page.getByRole("navigation", { name: "Main" }).innerText();
    for (const item of ["Dashboard", "Plans", "Runs", "Sites", "Plugins", "Events", "Audit"]) assert.match(nav, new RegExp(item));
  });

  test("renews a local session before its token expires", async () => {
    const tab = await browser.context.newPage();
    try {
      await signIn(tab, "admin", ADMIN_PASSWORD);
      // As if the hour had nearly passed: the token expires in 2 s, so the
      // UI renews it (POST /api/v1/auth/renew) at half that.
      const held = () => tab.evaluate(() => sessionStorage.getItem("rebound.token"));
      const first = await held();
      await tab.evaluate(() => sessionStorage.setItem("rebound.token.expires_at", String(Date.now() + 2000)));
      await tab.reload();
      await tab.getByRole("heading", { name: "Dashboard" }).waitFor();
      await tab.waitForFunction((t) => sessionStorage.getItem("rebound.token") !== t, first, { timeout: 10_000 });
      const expires = Number(await tab.evaluate(() => sessionStorage.getItem("rebound.token.expires_at")));
      assert.ok(expires > Date.now() + 3_000_000, "the new token lasts the hour again");
      const me = await fetch(`${BASE}/api/v1/auth/whoami`, { headers: { authorization: `Bearer ${await held()}` } });
      assert.equal((await me.json()).name, "user:admin");
      await go(tab, "Runs");
      assert.match(await tab.locator(".topbar").innerText(), /user:admin/);
      const audit = await api(admin, "GET", "/audit");
      assert.ok(JSON.stringify(audit).includes("auth.renew"), "the renewal is audited");
    } finally {
      await tab.close();
    }
  });

  test("signs in with the identity provider (OIDC code flow with PKCE), and says why one without a role is refused", async () => {
    // A tab of its own: the admin's session is not touched.
    const tab = await browser.context.newPage();
    try {
      async function throughIdp(login) {
        await tab.goto(`${BASE}/#/runs`);
        await tab.getByRole("button", { name: "Sign in with Lab IdP" }).click();
        // node-oidc-provider's own login and consent pages.
        await tab.locator("input[name=login]").fill(login);
        await tab.locator("input[name=password]").fill("any");
        await tab.locator("button[type=submit]").click();
        await tab.getByRole("button", { name: "Continue" }).click();
      }
      await throughIdp("olivia");
      // Back where the sign-in began, signed in with the issuer's token.
      await tab.getByRole("heading", { name: "Runs" }).waitFor();
      assert.match(await tab.locator(".topbar").innerText(), /oidc:olivia@http:\/\/127\.0\.0\.1:\d+\s*\(operator\)/);
      assert.doesNotMatch(tab.url(), /code=|state=/, "the code is not left in the address bar");
      await tab.getByRole("heading", { name: "Start a run" }).waitFor();

      // The issuer's access token lives 20 s: the UI renews it with the
      // refresh token before it expires, and the session goes on.
      const held = () => tab.evaluate(() => sessionStorage.getItem("rebound.token"));
      const first = await held();
      await tab.waitForFunction((t) => sessionStorage.getItem("rebound.token") !== t, first, { timeout: 20_000 });
      await go(tab, "Sites");
      await tab.getByRole("heading", { name: "Sites" }).waitFor();
      assert.match(await tab.locator(".topbar").innerText(), /oidc:olivia@/);
      const renewed = await fetch(`${BASE}/api/v1/auth/whoami`, { headers: { authorization: `Bearer ${await held()}` } });
      assert.equal(renewed.status, 200);

      // Signing out ends the provider's session too (RP-initiated logout):
      // its own confirmation page, then back to Rebound's sign-in — and the
      // next sign-in there asks who is signing in again.
      await tab.getByRole("button", { name: "Sign out" }).click();
      await tab.getByRole("button", { name: /Yes, sign me out/ }).click();
      await tab.getByRole("heading", { name: "Sign in to Rebound" }).waitFor();
      assert.ok(tab.url().startsWith(BASE), tab.url());
      await throughIdp("mallory");
      const alert = tab.getByRole("alert");
      await alert.waitFor();
      assert.match(await alert.innerText(), /no Rebound role/);
      await tab.getByRole("heading", { name: "Sign in to Rebound" }).waitFor();

      const audit = await api(admin, "GET", "/audit");
      assert.ok(JSON.stringify(audit).includes("oidc:olivia@"), "the sign-in is audited");
      assert.ok(JSON.stringify(audit).includes("auth.refresh"), "the renewal is audited");
    } finally {
      await tab.close();
    }
  });

  test("registers a site whose credentials are never shown back", async () => {
    await go(page, "Sites");
    await page.getByRole("heading", { name: "Sites" }).waitFor();
    const form = page.locator("section", { has: page.getByRole("heading", { name: "Register a site" }) });
    await form.getByLabel("Site name").fill("lab-b");
    await form.getByLabel("Plugin").selectOption("example");
    const settings = form.locator("fieldset", { hasText: "Settings" });
    await settings.getByLabel("Value").fill(LAB_B_ENDPOINT);
    const credentials = form.locator("fieldset", { hasText: "Credentials" });
    assert.equal(await credentials.getByLabel("Value").getAttribute("type"), "password");
    await credentials.getByLabel("Value").fill(LAB_B_TOKEN);
    await form.getByLabel("Egress granted (URLs, space-separated)").fill(LAB_B_ENDPOINT);
    await form.getByRole("button", { name: "Register site" }).click();
    await form.getByText("Site lab-b registered (revision 1).").waitFor();
    assert.equal(await credentials.getByLabel("Value").inputValue(), "", "the credential leaves the form once sent");

    const row = page.locator("tr[data-site='lab-b']");
    await row.waitFor();
    assert.match(await row.innerText(), /token\s*\(set, write-only\)/);
    assert.ok(!(await page.content()).includes(LAB_B_TOKEN), "the credential is nowhere on the page");
    const site = await api(admin, "GET", "/sites/lab-b");
    assert.deepEqual(site.secrets, ["token"]);
    assert.ok(!JSON.stringify(site).includes(LAB_B_TOKEN));

    await row.getByRole("button", { name: "Check the health of lab-b" }).click();
    await row.getByText("serving", { exact: true }).waitFor();
  });

  test("creates a plan with all four objectives, after the host's validation messages", async () => {
    await go(page, "Plans");
    await page.getByRole("link", { name: "New plan" }).click();
    await page.getByRole("heading", { name: "New plan" }).waitFor();
    await page.getByLabel("Name", { exact: true }).fill("shop");
    await page.getByLabel("Description").fill("Web shop, three tiers");
    await page.getByLabel("Source site").selectOption("lab-a");
    await page.getByLabel("Target site").selectOption("lab-b");
    // Workloads from lab-a's inventory, in dependency order.
    for (const id of ["vm-3", "vm-2", "vm-1"]) await page.getByLabel(`Protect ${id}`).check();
    const entry = (id) => page.locator("ol.workloads > li", { has: page.locator("code", { hasText: id }) });
    await entry("vm-2").getByLabel("vm-3").check();
    await entry("vm-1").getByLabel("vm-2").check();
    const dag = page.getByRole("img", { name: /^Recovery order/ });
    assert.equal(await dag.getAttribute("aria-label"), "Recovery order: tier 1: vm-3; tier 2: vm-2; tier 3: vm-1");

    // Values the host refuses: a failover that loses nothing, a failback with no time.
    await page.getByLabel("Failover RTO", { exact: true }).fill("20");
    await page.getByLabel("Failover RPO", { exact: true }).fill("0");
    await page.getByLabel("Failback RTO", { exact: true }).fill("0");
    await page.getByRole("button", { name: "Create plan" }).click();
    const refusal = page.getByRole("alert").filter({ hasText: "The host refused the plan" });
    await refusal.waitFor();
    const failoverRpo = page.locator(".field", { has: page.getByLabel("Failover RPO", { exact: true }) });
    assert.match(await failoverRpo.locator(".field-error").innerText(), /needs synchronous replication/);
    assert.equal(await page.getByLabel("Failover RPO", { exact: true }).getAttribute("aria-invalid"), "true");
    const failbackRto = page.locator(".field", { has: page.getByLabel("Failback RTO", { exact: true }) });
    assert.match(await failbackRto.locator(".field-error").innerText(), /must be more than 0s/);
    assert.match(await refusal.innerText(), /objectives\.failover\.rpo/);

    // Fixed: failover 20 min / 10 min, failback 2 h / 0 s.
    await page.getByLabel("Failover RPO", { exact: true }).fill("10");
    await page.getByLabel("Failback RTO", { exact: true }).fill("2");
    await page.getByLabel("Failback RTO unit").selectOption("h");
    await page.getByLabel("Failback RPO", { exact: true }).fill("0");
    await page.getByRole("button", { name: "Create plan" }).click();
    await page.getByText("Plan shop saved (revision 1).").waitFor();
    await page.getByRole("heading", { name: "Plan shop" }).waitFor();
    const plan = await api(admin, "GET", "/plans/shop");
    assert.deepEqual(plan.document.objectives, { failover: { rto: "20m", rpo: "10m" }, failback: { rto: "2h", rpo: "0s" } });
    assert.deepEqual(plan.document.workloads, [{ id: "vm-3" }, { id: "vm-2", depends_on: ["vm-3"] }, { id: "vm-1", depends_on: ["vm-2"] }]);

    // The same document as YAML.
    await page.getByRole("tab", { name: "YAML" }).click();
    const yaml = await page.getByLabel(/The plan document \(YAML/).inputValue();
    assert.match(yaml, /failover:\n\s+rto: 20m\n\s+rpo: 10m/);
    await page.getByRole("tab", { name: "Form" }).click();

    // Preview before running: the steps and the RTO forecast.
    const dryRun = page.locator("section", { has: page.getByRole("heading", { name: "Dry-run preview" }) });
    await dryRun.getByLabel("Workflow").selectOption("failover");
    await dryRun.getByRole("button", { name: "Preview" }).click();
    const forecast = dryRun.getByTestId("forecast");
    await forecast.waitFor();
    assert.match(await forecast.innerText(), /RTO forecast .* against the failover RTO objective of 20 min/);
    assert.match(await forecast.innerText(), /fence vm-3 on lab-a/);
    assert.match(await dryRun.getByRole("status").innerText(), /saved plan/);

    // An edit is previewed before it is saved, and stays unsaved.
    await page.getByLabel("Failover RTO", { exact: true }).fill("45");
    await dryRun.getByRole("button", { name: "Preview" }).click();
    await dryRun.getByText("Previewing your unsaved changes.").waitFor();
    assert.match(await forecast.innerText(), /against the failover RTO objective of 45 min/);
    assert.equal((await api(admin, "GET", "/plans/shop")).document.objectives.failover.rto, "20m");
    await page.getByLabel("Failover RTO", { exact: true }).fill("20");

    // A hook to an origin this host does not allow: the host says what to add.
    await page.getByRole("button", { name: "Add a hook" }).click();
    await page.getByLabel("Hook name").fill("warm");
    await page.getByLabel("URL", { exact: true }).fill("https://ops.example.com/warm");
    await dryRun.getByRole("button", { name: "Preview" }).click();
    const refused = dryRun.getByRole("alert");
    await refused.waitFor();
    assert.match(await refused.innerText(), /hooks\[0\]\.url: .*add "https:\/\/ops\.example\.com:443" to hooks\.allow/);
    await page.locator("fieldset.hook").getByRole("button", { name: "Remove", exact: true }).click();
    await page.getByText("No hooks.").waitFor();
  });

  async function startRun(workflow) {
    await go(page, "Runs");
    const start = page.locator("section", { has: page.getByRole("heading", { name: "Start a run" }) });
    await start.getByLabel("Plan to run").selectOption("shop");
    await start.getByLabel("Workflow to run").selectOption(workflow);
    await start.getByRole("button", { name: "Start…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByTestId("forecast").waitFor();
    await dialog.getByRole("button", { name: new RegExp(`^Start ${workflow.replaceAll("_", " ")}$`) }).click();
    await page.getByTestId("run-status").waitFor();
    return page.url().split("#/runs/")[1];
  }

  async function finished(status = "succeeded") {
    await page.getByTestId("run-status").getByText(status.replaceAll("_", " "), { exact: true }).waitFor({ timeout: 60_000 });
  }

  test("runs a drill and follows its timeline to the end", async () => {
    await startRun("replication");
    await finished();
    const id = await startRun("drill");
    assert.ok(id?.startsWith("run-") || id?.length > 0, `run page: ${page.url()}`);
    await finished();
    // The event stream reached its `end`.
    await page.getByRole("status").filter({ hasText: "finished" }).waitFor();
    const steps = page.locator("ol.timeline > li");
    const count = await steps.count();
    assert.ok(count >= 6, `${count} steps`);
    for (let i = 0; i < count; i++) assert.match(await steps.nth(i).innerText(), /succeeded/);
    const run = await api(admin, "GET", `/runs/${id}`);
    assert.equal(run.steps.length, count, "every step of the run is on the timeline");
    const report = page.getByTestId("report");
    assert.match(await report.innerText(), /RTO\s+\S+.*\s+20 min\s+met/);
    assert.match(await report.getByTestId("plugins").innerText(), /^Plugins: example \d+\.\d+\.\d+$/);
    const download = page.waitForEvent("download");
    await report.getByRole("button", { name: "Download report (Markdown)" }).click();
    const file = await (await download).path();
    const text = readFileSync(file, "utf8");
    assert.match(text, /^# drill of shop/);
    assert.match(text, /\| RTO \| .* \| 20 min \| met \|/);
    assert.match(text, /^Plugins: example \d+\.\d+\.\d+\.$/m);
  });

  test("says what a drill could not tear down, until a replication cycle removes it", async () => {
    // lab-b refuses every DELETE: the drill's sandbox there cannot go.
    const faults = `${LAB_B_ENDPOINT}/_lab/faults`;
    const set = await fetch(faults, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ error_rate: 1.0, method: "DELETE" }),
    });
    assert.equal(set.status, 200, await set.text());
    let drill;
    try {
      drill = await startRun("drill");
      await finished("failed");
      const left = page.getByTestId("report").getByTestId("left");
      assert.match(
        await left.innerText(),
        /^Left on lab-b: its sandbox — the plan's next replication cycle or drill removes it \(start a replication cycle on the Runs page to remove it now\)\.$/,
      );
    } finally {
      await fetch(faults, { method: "DELETE" });
    }
    await startRun("replication");
    await finished();
    const events = await api(admin, "GET", "/events?plan=shop&limit=20");
    const removed = events.items.find((e) => e.kind === "drill.leftovers.removed");
    assert.equal(removed?.detail?.run, drill, JSON.stringify(events.items.map((e) => [e.kind, e.detail])));
  });

  test("runs a round-trip drill: the way back is timed against the failback objective", async () => {
    await go(page, "Plans");
    await page.getByRole("link", { name: "shop", exact: true }).click();
    await page.getByRole("heading", { name: "Plan shop" }).waitFor();
    await page.getByRole("checkbox", { name: /Round trip:/ }).check();
    await page.getByRole("button", { name: "Save plan" }).click();
    await page.getByText(/Plan shop saved \(revision \d+\)\./).waitFor();
    assert.deepEqual((await api(admin, "GET", "/plans/shop")).document.drills, { round_trip: true });

    const id = await startRun("drill");
    await finished();
    const timeline = await page.locator("ol.timeline").innerText();
    assert.match(timeline, /← materialize vm-3 on lab-a/);
    assert.match(timeline, /tear down the drill sandbox on lab-a/);
    const back = page.getByTestId("return-leg");
    assert.match(await back.innerText(), /RTO of the way back \(failback phase\)\s+\S+.*\s+2 h\s+met/);
    const report = await api(admin, "GET", `/runs/${id}`);
    assert.equal(report.report.return_leg.phase, "failback");

    // Drills on a schedule: too often is refused with the host's reason;
    // weekly is saved, and the dashboard shows when the next is due (a
    // week after the drill above started).
    await go(page, "Plans");
    await page.getByRole("link", { name: "shop", exact: true }).click();
    await page.getByRole("checkbox", { name: /On a schedule:/ }).check();
    await page.getByLabel("Drill every", { exact: true }).fill("30");
    await page.getByLabel("Drill every unit").selectOption("m");
    await page.getByRole("button", { name: "Save plan" }).click();
    await page.getByText(/30m is too often.*at least 1h apart/).first().waitFor();
    await page.getByLabel("Drill every unit").selectOption("d");
    await page.getByLabel("Drill every", { exact: true }).fill("7");
    await page.getByRole("button", { name: "Save plan" }).click();
    await page.getByText(/Plan shop saved \(revision \d+\)\./).waitFor();
    assert.deepEqual((await api(admin, "GET", "/plans/shop")).document.drills, { round_trip: true, every: "7days" });
    const drill = (await api(admin, "GET", "/compliance")).items.find((c) => c.plan === "shop").drill;
    assert.equal(drill.last_run, id);
    assert.equal(drill.met, true);
    assert.equal(drill.due_at_ms, report.created_at_ms + 7 * 86_400_000);
    // The runbook says so, beside the round trip's steps.
    const book = page.waitForEvent("download");
    await page.getByRole("button", { name: "Download runbook (Markdown)" }).click();
    const runbook = readFileSync(await (await book).path(), "utf8");
    assert.match(runbook, /^# Runbook: shop\n/);
    assert.match(runbook, /^- Drills every 7days: the last successful one started /m);
    assert.match(runbook, /^## 1\. Failover — `lab-a` → `lab-b`$/m);
    assert.match(runbook, /^## 3\. Failback — `lab-b` → `lab-a`$/m);
    await go(page, "Dashboard");
    assert.match(await page.locator('tr[data-plan="shop"] td[data-phase="drill"]').innerText(), /every 7 d · next /);

    // Back to one-way drills by hand for the tests that follow.
    await go(page, "Plans");
    await page.getByRole("link", { name: "shop", exact: true }).click();
    await page.getByRole("checkbox", { name: /On a schedule:/ }).uncheck();
    await page.getByRole("checkbox", { name: /Round trip:/ }).uncheck();
    await page.getByRole("button", { name: "Save plan" }).click();
    await page.getByText(/Plan shop saved \(revision \d+\)\./).waitFor();
    assert.equal((await api(admin, "GET", "/plans/shop")).document.drills, undefined);
  });

  test("approves a failback at its gate", async () => {
    await startRun("failover");
    await finished();
    await startRun("reprotect");
    await finished();
    await startRun("failback");
    await finished("waiting_approval");
    await page.getByRole("button", { name: "Approve…" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Approve", exact: true }).click();
    await finished();
    assert.match(await page.getByTestId("report").innerText(), /failback phase/);
    const plan = await api(admin, "GET", "/plans/shop");
    assert.equal(plan.lifecycle.state, "protected");
    const audit = await api(admin, "GET", "/audit?limit=50");
    assert.ok(audit.items.some((e) => e.principal === "user:admin" && /approve/.test(e.action)), JSON.stringify(audit.items.map((e) => e.action)));
  });

  test("shows the plan on the dashboard against both phases' objectives", async () => {
    await go(page, "Dashboard");
    const row = page.locator("tr[data-plan='shop']");
    await row.waitFor();
    const text = await row.innerText();
    assert.match(text, /protected/);
    assert.match(text, /\/ 10m/);
    assert.match(text, /\/ 2h/);
    assert.match(text, /succeeded/, "the last drill");
    // The failback is forecast ahead of time, against its own objective.
    const failbackRto = await row.locator("[data-phase='failback-rto']").innerText();
    assert.match(failbackRto, /^\d[\d.]* ?(ms|s|min|h).* \/ 2h/);
    assert.match(failbackRto, /met/);
    assert.match(failbackRto, /ahead/);
    assert.doesNotMatch(await row.locator("[data-phase='failover-rto']").innerText(), /ahead/);
  });

  test("creates and revokes an API token, and creates, lists and removes a local user", async () => {
    await go(page, "Access");
    await page.getByLabel("Token name").fill("ci-pipeline");
    await page.getByLabel("Token role").selectOption("operator");
    await page.getByRole("button", { name: "Create token" }).click();
    const secret = await page.getByLabel("The new token's secret").inputValue();
    assert.match(secret, /^rbt_[0-9a-f]{64}$/);
    const whoami = (token) => fetch(`${BASE}/api/v1/auth/whoami`, { headers: { authorization: `Bearer ${token}` } });
    const me = await whoami(secret);
    assert.equal(me.status, 200);
    assert.match((await me.json()).role, /operator/);
    // Listed without its secret; revoked at once.
    const row = page.locator("tr[data-token='ci-pipeline']");
    await row.waitFor();
    assert.doesNotMatch(await page.locator("table").first().innerText(), /rbt_/);
    await row.getByRole("button", { name: "Revoke the token ci-pipeline" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Revoke the token" }).click();
    await row.getByText(/^revoked/).waitFor();
    assert.equal((await whoami(secret)).status, 401);

    await page.getByLabel("User name").fill("olga");
    await page.getByLabel("New password").fill("short");
    await page.getByLabel("User role").selectOption("operator");
    await page.getByRole("button", { name: "Save user" }).click();
    await page.getByRole("alert").filter({ hasText: "The host refused the user" }).waitFor();
    await page.getByLabel("New password").fill("operator-password-1");
    await page.getByRole("button", { name: "Save user" }).click();
    await page.getByText("User olga saved as operator").waitFor();
    const olga = await apiToken("olga", "operator-password-1");
    assert.equal((await api(olga, "GET", "/auth/whoami")).role, "operator");
    // Listed with the role; removed, and olga's session ends at once.
    const user = page.locator("tr[data-user='olga']");
    await user.waitFor();
    assert.match(await user.innerText(), /operator/);
    await user.getByRole("button", { name: "Remove the user olga" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Remove the user" }).click();
    await user.waitFor({ state: "detached" });
    assert.equal((await whoami(olga)).status, 401);
    // The only admin stays: the host's refusal is shown, nothing changes.
    await page.locator("tr[data-user='admin']").getByRole("button", { name: "Remove the user admin" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: "Remove the user" }).click();
    // The refusal itself, not the dialog's own warning (which names the
    // rule too): the host's detail in the alert.
    await dialog.getByRole("alert").filter({ hasText: "The host kept the user" }).filter({ hasText: "it is the only admin" }).waitFor();
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await page.locator("tr[data-user='admin']").waitFor();
  });

  test("unprotects the plan (an admin's choice), then protects it again", async () => {
    const before = await api(admin, "GET", "/plans/shop/recovery-points");
    assert.ok(before.items.length > 0);
    await startRun("unprotect");
    await finished();
    assert.equal((await api(admin, "GET", "/plans/shop")).lifecycle.state, "unprotected");
    assert.equal((await api(admin, "GET", "/plans/shop/recovery-points")).items.length, 0);
    await go(page, "Dashboard");
    await page.locator("tr[data-plan='shop']").getByText("unprotected").waitFor();
    // Saved again from the editor: protected again.
    await go(page, "Plans");
    await page.getByRole("link", { name: "shop" }).first().click();
    await page.getByText("Saving the plan protects it again").waitFor();
    await page.getByRole("button", { name: "Save plan" }).click();
    await page.getByText(/Plan shop saved/).waitFor();
    assert.equal((await api(admin, "GET", "/plans/shop")).lifecycle.state, "protected");
    await startRun("replication");
    await finished();

    // A second plan, unprotected, then deleted from its editor.
    const spare = { ...(await api(admin, "GET", "/plans/shop")).document, name: "spare" };
    await api(admin, "PUT", "/plans/spare", spare);
    const run = await api(admin, "POST", "/plans/spare/runs", { workflow: "unprotect" });
    await waitRun(admin, run.id, ["succeeded"]);
    await page.goto(`${BASE}/#/plans/spare`);
    await page.getByRole("button", { name: "Delete plan…" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Delete the plan" }).click();
    await page.getByRole("link", { name: "shop" }).first().waitFor();
    assert.equal(await page.getByRole("link", { name: "spare", exact: true }).count(), 0);
    await assert.rejects(api(admin, "GET", "/plans/spare"), /404/);
  });

  test("a viewer is refused the buttons it cannot use", async () => {
    await api(admin, "PUT", "/users/vera", { password: "viewer-password-1", role: "viewer" });
    // A run waiting for approval, which only an operator may approve.
    const waiting = await api(admin, "POST", "/plans/shop/runs", { workflow: "migration" });
    await waitRun(admin, waiting.id, ["waiting_approval"]);

    await signOut(page);
    await signIn(page, "vera", "viewer-password-1");
    const nav = await page.getByRole("navigation", { name: "Main" }).innerText();
    assert.doesNotMatch(nav, /Audit|Access/);

    await go(page, "Plans");
    await page.getByRole("link", { name: "shop" }).first().waitFor();
    assert.equal(await page.getByRole("link", { name: "New plan" }).count(), 0);
    await page.getByRole("link", { name: "shop" }).first().click();
    await page.getByText("Read only: editing plans needs the admin role.").waitFor();
    assert.equal(await page.getByRole("button", { name: /Save plan|Create plan/ }).count(), 0);
    assert.ok(await page.getByLabel("Failover RTO", { exact: true }).isDisabled());

    await page.goto(`${BASE}/#/runs/${waiting.id}`);
    await page.getByTestId("run-status").getByText("waiting approval").waitFor();
    assert.equal(await page.getByRole("button", { name: /Approve|Cancel run/ }).count(), 0);

    await go(page, "Runs");
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    assert.equal(await page.getByRole("heading", { name: "Start a run" }).count(), 0);

    await go(page, "Sites");
    await page.locator("tr[data-site='lab-b']").waitFor();
    assert.equal(await page.getByRole("heading", { name: "Register a site" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /Delete|Fail over/ }).count(), 0);
    await page.getByRole("button", { name: "Check the health of lab-a" }).click();
    await page.locator("tr[data-site='lab-a']").getByText("serving", { exact: true }).waitFor();

    await go(page, "Plugins");
    await page.locator("tr[data-plugin='example']").waitFor();
    await page.locator("tr[data-plugin='example']").getByText("contract 0.2.0").waitFor();
    assert.equal(await page.getByRole("button", { name: /Disable|Enable|Publish|Lift/ }).count(), 0);

    // What the UI hides, the host refuses too.
    const token = await apiToken("vera", "viewer-password-1");
    await assert.rejects(api(token, "POST", `/runs/${waiting.id}/approve`), /403/);
    await api(admin, "POST", `/runs/${waiting.id}/cancel`);
  });

  test("fails over every plan a lost site serves, from the Sites page", async () => {
    await signOut(page);
    await signIn(page, "admin", ADMIN_PASSWORD);
    await go(page, "Sites");
    await page.locator("tr[data-site='lab-a']").getByText("serves shop").waitFor();
    await page.locator("tr[data-site='lab-b']").getByText("standby for shop").waitFor();
    await page.getByRole("button", { name: "Fail over every plan lab-a serves" }).click();
    const dialog = page.getByRole("dialog");
    const served = dialog.getByRole("list", { name: "Plans lab-a serves" });
    await served.getByText("shop → lab-b").waitFor();
    await served.getByText(/expected outage .+ against its RTO objective of \d+ (min|h)/).waitFor();
    await dialog.getByRole("button", { name: "Fail over the plans" }).click();
    const result = page.getByRole("status").filter({ hasText: "lab-a: 1 failover started" });
    await result.waitFor();
    // lab-b serves no plan yet: nothing to confirm there.
    await page.getByRole("button", { name: "Fail over every plan lab-b serves" }).click();
    await dialog.getByText("lab-b serves no plan.").waitFor();
    assert.ok(await dialog.getByRole("button", { name: "Fail over the plans" }).isDisabled());
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await result.getByRole("link", { name: /^run-/ }).click();
    await finished();
    assert.match(await page.getByTestId("report").innerText(), /failover phase/);
    const plan = await api(admin, "GET", "/plans/shop");
    assert.equal(plan.lifecycle.state, "failed_over");
    assert.equal(plan.lifecycle.primary, "lab-b");
    const audit = await api(admin, "GET", "/audit?limit=50");
    assert.ok(audit.items.some((e) => e.principal === "user:admin" && e.action === "site.failover" && e.target === "lab-a"));
  });

  test("fails over permanently onto a new standby, the old primary lost for good", async () => {
    await api(admin, "PUT", "/sites/lab-c", { plugin: "example", config: { endpoint: LAB_B_ENDPOINT }, secrets: { token: LAB_B_TOKEN }, egress: [LAB_B_ENDPOINT] });
    await go(page, "Runs");
    const start = page.locator("section", { has: page.getByRole("heading", { name: "Start a run" }) });
    await start.getByLabel("Plan to run").selectOption("shop");
    await start.getByLabel("Workflow to run").selectOption("permanent_failover");
    // Neither of the plan's own two sites is offered as a new one.
    const offered = await start.getByLabel("New standby").locator("option").evaluateAll((os) => os.map((o) => o.value));
    assert.ok(offered.includes("lab-c") && !offered.includes("lab-a") && !offered.includes("lab-b"), String(offered));
    await start.getByLabel("New standby").selectOption("lab-c");
    await start.getByRole("button", { name: "Start…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("heading", { name: "Start a permanent failover of shop onto lab-c?" }).waitFor();
    await dialog.getByTestId("forecast").waitFor();
    assert.match(await dialog.getByTestId("forecast").innerText(), /lab-b → lab-c/);
    await dialog.getByRole("button", { name: "Start permanent failover" }).click();
    await finished();
    const plan = await api(admin, "GET", "/plans/shop");
    assert.deepEqual([plan.lifecycle.state, plan.lifecycle.primary, plan.lifecycle.standby], ["protected", "lab-b", "lab-c"]);
  });
});
