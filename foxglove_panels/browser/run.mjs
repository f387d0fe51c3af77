// Loads the built extension (dist/extension.js) into a page of Debian's chromium (playwright-core) whose
// PanelExtensionContext speaks foxglove.sdk.v1 to a running gateway, drives one panel and takes screenshots.
//   node browser/run.mjs <scenario> <ws-url> <out-dir>     scenarios: panels, hil, datasets, training
// Prints one JSON line with what the panel showed; exits non-zero when an expectation fails.
import { readFileSync } from "node:fs";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const [scenario, url, outDir] = process.argv.slice(2);
if (!scenario || !url || !outDir) {
  console.error("usage: node browser/run.mjs <panels|hil|datasets|training> <ws-url> <out-dir>");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const bundle = readFileSync(join(here, "..", "dist", "extension.js"), "utf8");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: FLAGS });
const result = { scenario };
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  async function open(panel) {
    await page.setContent(`<html><body style="margin:0;background:#fff"><div id="panel"
      style="width:900px;height:640px"></div></body></html>`);
    await page.addScriptTag({ path: join(here, "foxgloveContext.js") });
    await page.evaluate(([code, name, u]) => window.startPanel(code, name, u), [bundle, panel, url]);
  }
  const shot = async (name) => page.screenshot({ path: join(outDir, name) });

  if (scenario === "hil") {
    await open("HIL Session");
    result.registered = await page.evaluate(() => window.registeredPanels);
    const state = page.getByTestId("state");
    const yes = page.locator("button[data-key=y]");
    await yes.waitFor({ state: "visible" });
    await page.waitForFunction(() => !document.querySelector("button[data-key=y]")?.disabled, null,
      { timeout: 30000 });
    result.before = { state: await state.textContent(), prompt: await page.getByTestId("prompt").textContent() };
    await shot("hil_session_ready.png");
    await yes.click();
    await page.waitForFunction((before) => document.querySelector("[data-testid=state]")?.textContent !== before,
      result.before.state, { timeout: 60000 });
    result.after = { state: await state.textContent(), prompt: await page.getByTestId("prompt").textContent(),
      result: await page.getByTestId("result").textContent() };
    await page.waitForTimeout(500);
    await shot("hil_session_after_y.png");
  } else if (scenario === "datasets") {
    await open("Dataset Browser");
    const first = page.locator("[data-dataset]").first();
    await first.waitFor({ timeout: 60000 });
    result.datasets = await page.locator("[data-dataset]").allTextContents();
    await first.click();
    const expected = await page.evaluate(() => {
      const t = document.querySelector("[data-dataset]")?.textContent ?? "";
      return Number((t.match(/· (\d+) episodes/) ?? [])[1] ?? 0);
    });
    await page.waitForFunction((n) => document.querySelectorAll("[data-episode]").length === n, expected,
      { timeout: 60000 });
    result.episodes = await page.locator("[data-episode]").allTextContents();
    await page.locator("[data-episode]").first().click();
    await shot("dataset_browser.png");
    await page.getByText("play", { exact: true }).click();
    await page.getByTestId("result").waitFor({ timeout: 30000 });
    result.play = await page.getByTestId("result").textContent();
    // the frames went out: the dataset manager's /playback/status, as the panel shows it, reaches FINISHED
    await page.waitForFunction(() => /FINISHED/.test(document.querySelector("[data-testid=playback]")?.textContent
      ?? ""), null, { timeout: 60000 });
    result.playback = await page.getByTestId("playback").textContent();
    await shot("dataset_browser_played.png");
  } else if (scenario === "training") {
    // start -> the workflow manager's job -> its live stats in the panel (step rising, loss shown, curve drawn)
    // -> stop -> CANCELLED
    await open("Training Dashboard");
    const start = page.getByText("start training", { exact: true });
    await page.waitForFunction(() => [...document.querySelectorAll("button")]
      .some((b) => b.textContent === "start training" && !b.disabled), null, { timeout: 60000 });
    await start.click();
    const step = () => Number((document.querySelector("[data-testid=epoch]")?.textContent ?? "")
      .match(/step (\d+)\//)?.[1] ?? 0);
    const seen = async () => page.evaluate(() => ({
      epoch: document.querySelector("[data-testid=epoch]")?.textContent ?? "",
      loss: document.querySelector("[data-testid=loss]")?.textContent ?? "",
      points: (document.querySelector("[data-testid=loss-curve] polyline")?.getAttribute("points") ?? "")
        .split(" ").filter(Boolean).length,
      text: document.querySelector("#panel")?.textContent ?? "",
    }));
    await page.waitForFunction(`(${step})() > 0`, null, { timeout: 180000 });
    const first = await seen();
    const firstStep = Number(first.epoch.match(/step (\d+)\//)[1]);
    await page.waitForFunction(`(${step})() > ${firstStep}`, null, { timeout: 180000 });
    await page.waitForFunction(() => (document.querySelector("[data-testid=loss-curve] polyline")
      ?.getAttribute("points") ?? "").split(" ").filter(Boolean).length >= 2, null, { timeout: 60000 });
    const second = await seen();
    result.live = [first, second];
    await shot("training_dashboard_live.png");
    await page.getByText("stop", { exact: true }).click();
    await page.waitForFunction(() => /CANCELLED/.test(document.querySelector("#panel")?.textContent ?? ""), null,
      { timeout: 60000 });
    result.stopped = await page.getByTestId("result").textContent();
    result.after = (await seen()).text;
  } else if (scenario === "panels") {
    for (const panel of ["Training Dashboard", "Model Comparison"]) {
      await open(panel);
      await page.waitForTimeout(1500);
      result[panel] = await page.locator("#panel").textContent();
      await shot(`${panel.toLowerCase().replace(/ /g, "_")}.png`);
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  result.pageErrors = errors;
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log(JSON.stringify(result));
} catch (err) {
  result.error = String(err);
  console.log(JSON.stringify(result));
  process.exitCode = 1;
} finally {
  await browser.close();
}
