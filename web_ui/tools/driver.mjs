// A line-oriented driver of Debian's chromium through playwright-core, for the Python tests and `bench web`:
// one JSON command per stdin line, one JSON reply per stdout line ({"ok": true, "value": ...} or
// {"ok": false, "error": "..."}). Usage: node driver.mjs [--chromium /usr/bin/chromium]
import { chromium } from "playwright-core";
import readline from "node:readline";

const argv = process.argv.slice(2);
const exe = argv.includes("--chromium") ? argv[argv.indexOf("--chromium") + 1] : "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath: exe,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
// bypassCSP: the page forbids eval (CSP); the driver's wait_js/eval evaluate test expressions in it
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
const page = await context.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
page.on("dialog", (d) => d.accept());  // confirm() on delete/deploy: the test means it

const ops = {
  goto: async (c) => { const t0 = Date.now(); await page.goto(c.url, { waitUntil: c.until ?? "load" }); return Date.now() - t0; },
  click: async (c) => page.click(c.sel, { timeout: c.timeout ?? 10000 }),
  fill: async (c) => page.fill(c.sel, String(c.value), { timeout: c.timeout ?? 10000 }),
  select: async (c) => page.selectOption(c.sel, String(c.value), { timeout: c.timeout ?? 10000 }),
  check: async (c) => page.setChecked(c.sel, !!c.value, { timeout: c.timeout ?? 10000 }),
  text: async (c) => page.textContent(c.sel, { timeout: c.timeout ?? 10000 }),
  wait_text: async (c) => {
    await page.waitForFunction(([sel, text]) => document.querySelector(sel)?.textContent?.includes(text),
      [c.sel, c.text], { timeout: c.timeout ?? 10000, polling: 50 });
    return page.textContent(c.sel);
  },
  wait_js: async (c) => (await page.waitForFunction(c.js, c.arg ?? null, { timeout: c.timeout ?? 10000, polling: 50 })).jsonValue(),
  eval: async (c) => page.evaluate(c.js),
  screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: !!c.full }); return c.path; },
  console: async () => consoleLines.splice(0),
  cookies: async () => context.cookies(),
};

const rl = readline.createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ok: true, value: "ready" }) + "\n");
for await (const line of rl) {
  if (!line.trim()) continue;
  let reply;
  try {
    const cmd = JSON.parse(line);
    if (cmd.op === "close") break;
    const fn = ops[cmd.op];
    if (!fn) throw new Error(`unknown op ${cmd.op}`);
    const value = await fn(cmd);
    reply = { ok: true, value: value === undefined ? null : value };
  } catch (e) {
    reply = { ok: false, error: String(e && e.message ? e.message.split("\n")[0] : e) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
await browser.close();
process.exit(0);
