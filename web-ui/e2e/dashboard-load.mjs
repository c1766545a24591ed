// The dashboard's load time in Chromium, for the api_load bench
// (host/rebound/benches/api_load.rs starts the host and runs this): signed
// in as the admin, the page is loaded REBOUND_LOADS times (default 10),
// each time from navigation start until every one of REBOUND_PLANS plans
// has its row and the summary cards are shown — what an admin waits for.
// Prints one JSON line: {"plans": N, "ms": [sorted load times]}.
import { ADMIN_PASSWORD, BASE, launch, signIn } from "./harness.mjs";

const plans = Number(process.env.REBOUND_PLANS ?? "1");
const loads = Number(process.env.REBOUND_LOADS ?? "10");

const { context, close } = await launch();
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await signIn(page, "admin", ADMIN_PASSWORD);
  const ms = [];
  for (let i = 0; i < loads; i++) {
    await page.reload();
    await page.waitForFunction(
      (n) =>
        document.querySelectorAll("tr[data-plan]").length >= n &&
        document.querySelector("section.cards") !== null,
      plans,
      { timeout: 60_000, polling: "raf" },
    );
    // Milliseconds since this navigation started.
    ms.push(await page.evaluate(() => performance.now()));
  }
  ms.sort((a, b) => a - b);
  console.log(JSON.stringify({ plans, ms }));
} finally {
  await close();
}
