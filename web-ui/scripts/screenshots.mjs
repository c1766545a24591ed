// The web UI's main pages, photographed for docs/ui.md. Run by
// `cargo xtask screenshots` (the ignored `screenshots` test of
// host/rebound/tests/ui_test.rs), which starts the lab and a host with
// the policy engine ticking every 2 s; this script gives it a few plans
// and runs, then takes the pictures into $REBOUND_SCREENSHOTS.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ADMIN_PASSWORD, BASE, api, apiToken, go, launch, signIn, waitRun } from "../e2e/harness.mjs";

const out = process.env.REBOUND_SCREENSHOTS ?? "screenshots";
mkdirSync(out, { recursive: true });
const admin = await apiToken("admin", ADMIN_PASSWORD);
const endpoint = process.env.LAB_B_ENDPOINT;

await api(admin, "PUT", "/sites/lab-b", { plugin: "example", config: { endpoint }, secrets: { token: process.env.LAB_B_TOKEN }, egress: [endpoint] });
const plan = (name, description, workloads, interval, failover, failback, approvals) => ({
  name,
  description,
  source: "lab-a",
  target: "lab-b",
  workloads,
  replication: { mode: "native", interval, retention: 3 },
  objectives: { failover, failback },
  network_mapping: [{ source: "prod-net", target: "dr-net", keep_addresses: true }],
  // The lab's example platform moves traffic by route weights.
  redirect: { target: { kind: "route", route: `${name}-www` }, canary: [10, 50, 100] },
  approvals,
});
// The shop's drills rehearse the round trip: its drill page shows the way back.
await api(admin, "PUT", "/plans/shop", {
  ...plan("shop", "Web shop, three tiers", [{ id: "vm-3" }, { id: "vm-2", depends_on: ["vm-3"] }, { id: "vm-1", depends_on: ["vm-2"] }], "1m", { rto: "20m", rpo: "2m" }, { rto: "2h", rpo: "0s" }, { failover: false, failback: true, migration: true }),
  drills: { round_trip: true },
});
await api(admin, "PUT", "/plans/billing", plan("billing", "Billing API and its database", [{ id: "vm-2" }, { id: "vm-3", depends_on: ["vm-2"] }], "1m", { rto: "1m", rpo: "5m" }, { rto: "1h", rpo: "0s" }, { failover: false, failback: true, migration: true }));
await api(admin, "PUT", "/plans/crm", plan("crm", "CRM front end", [{ id: "vm-1" }], "5m", { rto: "30m", rpo: "15m" }, { rto: "4h", rpo: "0s" }, { failover: false, failback: true, migration: true }));

const run = async (name, workflow, until = ["succeeded"]) => {
  const r = await api(admin, "POST", `/plans/${name}/runs`, { workflow }, { "idempotency-key": `shots-${name}-${workflow}` });
  return waitRun(admin, r.id, until, 120_000);
};
// Replication first (the policy engine would schedule it too), then runs.
for (const name of ["shop", "billing", "crm"]) await run(name, "replication");
const drill = await run("shop", "drill");
await run("crm", "failover");
await run("crm", "reprotect");
const failback = await run("crm", "failback", ["waiting_approval"]);
// Policy ticks for a while: shop's RPO lag reaches its 1m replication
// interval and a cycle is scheduled, a sample for the chart.
await new Promise((r) => setTimeout(r, 75_000));

const browser = await launch();
const page = await browser.context.newPage();
const shot = async (file, options = {}) => {
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(out, file), ...options });
  console.log(`wrote ${join(out, file)}`);
};
try {
  await page.goto(`${BASE}/`);
  await page.getByLabel("Username").fill("admin");
  await shot("sign-in.png");
  await signIn(page, "admin", ADMIN_PASSWORD);
  await page.locator("tr[data-plan='shop']").waitFor();
  await page.locator("tr[data-plan='shop']").getByRole("button", { name: /Chart the RPO lag/ }).click();
  await shot("dashboard.png", { fullPage: true });

  await page.goto(`${BASE}/#/plans/shop`);
  await page.getByRole("heading", { name: "Plan shop" }).waitFor();
  await page.getByRole("img", { name: /^Recovery order/ }).waitFor();
  await shot("plan-editor.png");
  await page.getByRole("heading", { name: "Protected workloads and their order" }).scrollIntoViewIfNeeded();
  await page.locator("section", { has: page.getByRole("heading", { name: "Recovery order" }) }).scrollIntoViewIfNeeded();
  await shot("plan-workloads.png");
  await page.getByLabel("Failover RPO", { exact: true }).fill("0");
  await page.getByRole("button", { name: "Save plan" }).click();
  await page.getByRole("alert").filter({ hasText: "The host refused the plan" }).waitFor();
  await page.locator("section", { has: page.getByRole("heading", { name: "Objectives per phase" }) }).scrollIntoViewIfNeeded();
  await shot("plan-validation.png");
  await page.getByRole("tab", { name: "YAML" }).click();
  await shot("plan-yaml.png");

  await page.goto(`${BASE}/#/runs/${drill.id}`);
  await page.getByTestId("report").waitFor();
  await shot("run-drill.png", { fullPage: true });
  await page.goto(`${BASE}/#/runs/${failback.id}`);
  await page.getByRole("button", { name: "Approve…" }).waitFor();
  await shot("run-approval.png");
  await go(page, "Runs");
  await page.locator("tr[data-run]").first().waitFor();
  await shot("runs.png");

  await go(page, "Sites");
  for (const site of ["lab-a", "lab-b"]) {
    await page.getByRole("button", { name: `Check the health of ${site}` }).click();
    await page.locator(`tr[data-site='${site}']`).getByText("serving", { exact: true }).waitFor();
  }
  await shot("sites.png", { fullPage: true });
  await go(page, "Plugins");
  await page.locator("tr[data-plugin='example']").getByRole("button", { name: "Versions" }).click();
  await page.getByRole("table", { name: /Versions of example/ }).waitFor();
  await shot("plugins.png", { fullPage: true });
  await go(page, "Events");
  await page.locator("table.grid tbody tr").first().waitFor();
  await shot("events.png");
  await go(page, "Audit");
  await page.locator("table.grid tbody tr").first().waitFor();
  await shot("audit.png");
  await go(page, "Access");
  await page.getByLabel("Token name").fill("ci-pipeline");
  await page.getByRole("button", { name: "Create token" }).click();
  await page.locator("tr[data-token='ci-pipeline']").waitFor();
  await shot("access.png", { fullPage: true });
} finally {
  await browser.close();
}
