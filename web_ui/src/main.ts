// The training web page: renders the live stream (/api/events, Server-Sent Events) and posts the operator's
// actions to /api/*. Charts with uPlot (bundled by esbuild; nothing is fetched from a CDN).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
// One wording of the comparison's evidence for the Foxglove panel and this page (a pure module, no Foxglove import).
import { type ComparisonStatus, evidenceDetails } from "../../foxglove_panels/src/modelComparison";

type Dict = Record<string, any>;

declare global {
  interface Window {
    __h1: { ready: number | null; log: { topic: string; t: number; message?: string }[]; loss: number };
  }
}
window.__h1 = { ready: null, log: [], loss: 0 };

const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`missing ${sel}`);
  return el;
};
const state: Dict = {};
let selected: { dataset: string; index: number | null } | null = null;

function esc(s: unknown): string {
  return String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
function num(x: unknown, digits = 2): string {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "-";
}
function pct(x: unknown): string {
  return typeof x === "number" && x >= 0 ? `${(100 * x).toFixed(0)}%` : "-";
}
function duration(s: unknown): string {
  if (typeof s !== "number" || s < 0) return "-";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}
function facts(el: HTMLElement, rows: [string, unknown][]): void {
  el.innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
}

let toastTimer = 0;
function toast(text: string, ok: boolean): void {
  const el = $("#toast");
  el.textContent = text;
  el.className = ok ? "ok" : "bad";
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => (el.className = ""), 6000);
}

async function post(path: string, body?: Dict): Promise<Dict | null> {
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      credentials: "same-origin",
    });
    const data = await r.json().catch(() => ({}));
    if (r.status === 401) location.href = "/login";
    const text = data.message ?? data.error ?? `HTTP ${r.status}`;
    toast(text, r.ok);
    return r.ok ? data : null;
  } catch (e) {
    toast(`request failed: ${e}`, false);
    return null;
  }
}

// --- session ---------------------------------------------------------------------------------------------------
function renderSession(s: Dict): void {
  $("#session-state").textContent = s.state_name ?? "-";
  $("#session-epoch").textContent = s.epoch >= 0 ? `epoch ${s.epoch}` : "";
  $("#session-prompt").textContent = s.prompt ?? "";
  $("#session-message").textContent = s.last_error ? `${s.message ?? ""} (error: ${s.last_error})` : s.message ?? "";
  const allowed: string[] = s.allowed_keys ?? [];
  document.querySelectorAll<HTMLButtonElement>("button[data-key]").forEach((b) => {
    b.classList.toggle("allowed", allowed.includes(b.dataset.key!));
  });
  const label = s.label === 1 ? "success" : s.label === 0 ? "failure" : "-";
  facts($("#session-facts"), [
    ["episode", s.episode_index], ["saved (epoch / total)", `${s.episodes_saved ?? "-"} / ${s.episodes_total ?? "-"}`],
    ["label", label], ["arm", s.arm_mode || "-"], ["model", s.model_version || "-"],
    ["policy / human frames", `${s.policy_frames ?? "-"} / ${s.human_frames ?? "-"}`],
    ["server", s.server_ready ? `ready, epoch ${s.server_epoch}` : "not ready"],
  ]);
}
function renderRecorder(r: Dict): void {
  const healthy = !r.error && !(r.stale_sources ?? []).length;
  facts($("#recorder"), [
    ["health", healthy ? "ok" : r.error || `stale: ${(r.stale_sources ?? []).join(", ")}`],
    ["recording", r.recording ? "yes" : "no"], ["frames", r.frames],
    ["rate", `${num(r.achieved_rate_hz, 1)} / ${num(r.target_rate_hz, 0)} Hz`], ["missed ticks", r.missed_ticks],
    ["file", (r.file_path ?? "").split("/").slice(-2).join("/") || "-"],
  ]);
  $("#recorder").classList.toggle("bad", !healthy);
}
function renderCameraStatus(c: Dict): void {
  (c.names ?? []).forEach((name: string, i: number) => {
    const fig = cameraFigure(name);
    fig.querySelector("figcaption")!.textContent =
      `${name}: ${c.connected?.[i] ? "ok" : "no signal"}${c.placeholder?.[i] ? " (placeholder)" : ""}, ` +
      `${num(c.rate_hz?.[i], 1)} Hz`;
    fig.classList.toggle("bad", !c.connected?.[i]);
  });
}
function cameraFigure(name: string): HTMLElement {
  let fig = document.getElementById(`cam-${name}`);
  if (!fig) {
    fig = document.createElement("figure");
    fig.id = `cam-${name}`;
    fig.innerHTML = `<img alt="${esc(name)}" width="160" height="120"><figcaption>${esc(name)}</figcaption>`;
    $("#cameras").appendChild(fig);
  }
  return fig;
}
function renderCamera(c: Dict): void {
  const fig = cameraFigure(c.name);
  (fig.querySelector("img") as HTMLImageElement).src = `data:image/jpeg;base64,${c.jpeg_b64}`;
  fig.classList.toggle("placeholder", !!c.placeholder);
}

// --- training --------------------------------------------------------------------------------------------------
const lossX: number[] = [];
const lossY: number[] = [];
let lossJob = "";
let chart: uPlot | null = null;
function ensureChart(): uPlot {
  if (chart) return chart;
  const el = $("#loss-chart");
  chart = new uPlot(
    {
      width: Math.max(320, el.clientWidth || 600), height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss" }],
      series: [{ label: "step" }, { label: "loss", stroke: "#2563eb", width: 2 }],
      legend: { show: true },
    },
    [lossX, lossY], el,
  );
  return chart;
}
function renderLoss(d: Dict): void {
  if (d.reset || d.job_id !== lossJob) {
    lossX.length = 0;
    lossY.length = 0;
    lossJob = d.job_id ?? "";
  }
  for (const [x, y] of d.points ?? []) {
    lossX.push(x);
    lossY.push(y);
  }
  window.__h1.loss = lossX.length;
  $("#loss-count").textContent = String(lossX.length);
  ensureChart().setData([lossX, lossY]);
}
function renderTrainer(t: Dict): void {
  $("#trainer-state").textContent = t.state_name ?? "-";
  $("#trainer-job").textContent = t.job_id ? `${t.job_id} (${t.policy_type || "?"})` : "";
  ($("#train-progress") as HTMLElement).style.width = `${Math.min(100, Math.max(0, t.progress_pct ?? 0))}%`;
  renderTrainFacts();
}
function renderTrainFacts(): void {
  const t = state.trainer ?? {}, s = state.stats ?? {};
  facts($("#train-facts"), [
    ["progress", `${num(t.progress_pct, 0)}%`], ["epoch", s.total_epochs ? `${s.epoch}/${s.total_epochs}` : s.epoch ?? "-"],
    ["step", s.total_steps ? `${s.step}/${s.total_steps}` : s.step ?? "-"], ["loss", num(s.loss, 4)],
    ["learning rate", typeof s.learning_rate === "number" ? s.learning_rate.toPrecision(3) : "-"], ["steps/s", num(s.steps_per_second, 1)], ["ETA", duration(s.eta_s)],
    ["dataset", t.dataset || "-"], ["model produced", t.model_version || "-"], ["message", t.message || ""],
    ...(t.error ? [["error", t.error] as [string, unknown]] : []),
  ]);
}

// --- datasets --------------------------------------------------------------------------------------------------
function renderDatasets(d: Dict): void {
  const sets: Dict[] = d.datasets ?? [];
  $("#datasets-table tbody").innerHTML = sets.map((s) => `<tr data-name="${esc(s.name)}">
    <td><a href="#datasets" class="ds-open">${esc(s.name)}</a></td><td>${esc(s.format)}</td><td>${esc(s.num_episodes)}</td>
    <td>${esc(s.total_frames)}</td><td>${num(s.duration_s, 1)} s</td>
    <td>${s.quality_score >= 0 ? num(s.quality_score, 0) : "-"}</td><td>${pct(s.success_rate)}</td>
    <td class="problems">${esc((s.problems ?? []).slice(0, 2).join("; "))}</td>
    <td><button class="small ds-export" data-format="hdf5">hdf5</button>
        <button class="small ds-export" data-format="lerobot">lerobot</button>
        <button class="small ds-export" data-format="mcap">mcap</button></td></tr>`).join("");
  const sel = $("#train-dataset") as HTMLSelectElement;
  const keep = sel.value;
  sel.innerHTML = `<option value="">latest (workflow's choice)</option>` +
    sets.map((s) => `<option value="${esc(s.name)}">${esc(s.name)} (${esc(s.num_episodes)} ep)</option>`).join("");
  sel.value = sets.some((s) => s.name === keep) ? keep : "";
  if (selected) openDataset(selected.dataset, false);
}
function openDataset(name: string, reset = true): void {
  const ds = (state.datasets?.datasets ?? []).find((s: Dict) => s.name === name);
  if (!ds) { $("#episodes").classList.add("hidden"); selected = null; return; }
  if (reset || !selected || selected.dataset !== name) selected = { dataset: name, index: null };
  $("#episodes").classList.remove("hidden");
  $("#episodes-title").textContent = `${name}: ${ds.num_episodes} episode(s)`;
  $("#episode-list").innerHTML = Array.from({ length: ds.num_episodes }, (_, i) =>
    `<button class="chip${selected?.index === i ? " on" : ""}" data-index="${i}">${i}</button>`).join("");
  if (reset) $("#episode-detail").innerHTML = "";
}
async function openEpisode(index: number): Promise<void> {
  if (!selected) return;
  selected.index = index;
  openDataset(selected.dataset, false);
  const q = new URLSearchParams({ dataset: selected.dataset, index: String(index) });
  const r = await fetch(`/api/datasets/episode?${q}`, { credentials: "same-origin" });
  const e = await r.json();
  if (!r.ok) { toast(e.error ?? `HTTP ${r.status}`, false); return; }
  const success = e.success === 1 ? "success" : e.success === 0 ? "failure" : "unknown";
  facts($("#episode-detail"), [
    ["file", e.path], ["frames", `${e.frames} (${num(e.duration_s, 1)} s at ${num(e.fps, 1)} Hz)`],
    ["policy / human frames", `${e.policy_frames} / ${e.human_frames}`], ["missed ticks", e.missed_ticks],
    ["label", success], ["quality", num(e.quality_score, 0)], ["model", e.model_version || "-"],
    ["excluded from training", (e.flagged ?? e.excluded) === undefined ? "-" : (e.flagged ?? e.excluded) ? "yes" : "no"], ["problems", (e.problems ?? []).join("; ") || "none"],
  ]);
}

// --- comparison ------------------------------------------------------------------------------------------------
function renderModels(m: Dict): void {
  const box = $("#cmp-models");
  const checked = new Set(Array.from(box.querySelectorAll<HTMLInputElement>("input:checked")).map((i) => i.value));
  box.innerHTML = (m.models ?? []).map((id: string) =>
    `<label class="chip"><input type="checkbox" value="${esc(id)}"${checked.has(id) ? " checked" : ""}> ${esc(id)}` +
    `${id === m.deployed ? " (deployed)" : ""}</label>`).join("");
  $("#deployed").textContent = m.deployed || "-";
}
function renderComparison(c: Dict): void {
  $("#cmp-state").textContent = c.state_name ?? "-";
  $("#cmp-id").textContent = c.comparison_id ? `${c.comparison_id} (${c.mode})` : "";
  $("#cmp-table tbody").innerHTML = (c.models ?? []).map((m: Dict) => {
    const lo = Math.max(0, m.success_ci_low ?? 0) * 100, hi = Math.min(1, m.success_ci_high ?? 0) * 100;
    return `<tr><td>${esc(m.model_id)}${m.model_id === c.winner ? " 🏆" : ""}</td><td>${esc(m.trials)}</td>
      <td>${pct(m.success_rate)} (${pct(m.success_ci_low)}-${pct(m.success_ci_high)})</td>
      <td class="ci"><div class="ci-bar" style="left:${lo}%;width:${Math.max(1, hi - lo)}%"></div>
        <div class="ci-dot" style="left:${(m.success_rate ?? 0) * 100}%"></div></td>
      <td>${m.mean_execution_time_s > 0 ? `${num(m.mean_execution_time_s, 1)} ± ${num(m.std_execution_time_s, 1)}` : "-"}</td>
      <td><button class="small deploy" data-model="${esc(m.model_id)}">deploy</button></td></tr>`;
  }).join("");
  const p = typeof c.p_value === "number" && c.p_value >= 0 ? c.p_value.toPrecision(3) : "not yet";
  $("#cmp-verdict").innerHTML = c.state_name && c.state_name !== "IDLE"
    ? `<b>${esc(c.test_name || "test")}</b>: p ${esc(p)}, alpha ${esc(c.alpha)}; ` +
      `${c.significant ? "significant" : "not significant"}${c.winner ? `; winner <b>${esc(c.winner)}</b>` : ""}.` +
      ` <span class="muted">${esc(c.message ?? "")}</span>` +
      evidenceDetails(c as ComparisonStatus).map((line) => `<div class="muted evidence">${esc(line)}</div>`).join("")
    : "";
}

// --- workflow --------------------------------------------------------------------------------------------------
function renderWorkflow(w: Dict): void {
  $("#wf-stage").textContent = w.stage_name ?? "-";
  facts($("#wf-facts"), [
    ["auto-train", w.auto_train_enabled ? "on" : "off"], ["auto-deploy", w.auto_deploy_enabled ? "on" : "off"],
    ["episodes since training", `${w.episodes_collected ?? "-"} / ${w.min_episodes_before_training ?? "-"}`],
    ["model", w.current_model_version || "-"], ["job", w.current_job_id || "-"],
    ["degradation", w.degradation_detected ? "DETECTED" : "no"], ["message", w.message || ""],
    // fields of the workflow manager's newer WorkflowStatus, when it has them
    ...(w.server_url !== undefined ? [["GPU server", `${w.server_url}: ${w.server_reachable ? "reachable" : "unreachable"}` +
      `${w.server_message ? ` (${w.server_message})` : ""}`] as [string, unknown]] : []),
    ...(w.episodes_total !== undefined ? [["episodes total / held out / excluded",
      `${w.episodes_total} / ${w.episodes_held_out} / ${w.episodes_excluded}`] as [string, unknown]] : []),
    ...(w.previous_model_version ? [["rollback would deploy", w.previous_model_version] as [string, unknown]] : []),
  ]);
  renderRecommendations();
}
function renderRecommendations(): void {
  const recs = [...(state.workflow?.recommendations ?? []), ...(state.analytics?.recommendations ?? [])];
  $("#recommendations").innerHTML = [...new Set(recs)].map((r) => `<li>${esc(r)}</li>`).join("") || "<li>none</li>";
}
function renderAnalytics(a: Dict): void {
  facts($("#analytics"), [
    ["recent success", `${pct(a.recent_success_rate)}` +
      `${a.recent_success_ci_low !== undefined && a.recent_success_ci_low >= 0 ? ` [${pct(a.recent_success_ci_low)}, ${pct(a.recent_success_ci_high)}]` : ""}` +
      ` over ${a.window_trials ?? "-"} trials`],
    ["baseline", pct(a.baseline_success_rate)], ["trend / 100 trials", num(a.trend_per_100_trials, 3)],
    ["degradation", a.degradation_detected ? `yes (p ${num(a.degradation_p_value, 4)})` : "no"],
    ...(a.degradation_evidence ? [["evidence", a.degradation_evidence] as [string, unknown]] : []),
    ...(a.intervention_rate !== undefined ? [["interventions", pct(a.intervention_rate)] as [string, unknown]] : []),
  ]);
  renderRecommendations();
}
function renderParams(p: Dict): void {
  $("#params-node").textContent = p.node ? `on ${p.node}` : "";
  if (p.error) {
    $("#params tbody").innerHTML = `<tr><td class="bad">${esc(p.error)}</td></tr>`;
    return;
  }
  const focused = document.activeElement?.closest("tr")?.getAttribute("data-param");
  const tbody = $("#params tbody");
  for (const prm of p.parameters ?? []) {
    let row = tbody.querySelector<HTMLTableRowElement>(`tr[data-param="${CSS.escape(prm.name)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.param = prm.name;
      row.dataset.type = prm.type;
      const range = prm.min != null || prm.max != null ? ` [${prm.min ?? ""}, ${prm.max ?? ""}]` : "";
      const input = prm.type === "bool" ? `<input type="checkbox" class="pv">`
        : `<input class="pv" ${prm.type === "int" || prm.type === "float" ? `type="number" step="any"` : ""}>`;
      row.innerHTML = `<td title="${esc(prm.description)}">${esc(prm.name)}<div class="muted">${esc(prm.description)}${esc(range)}</div></td>
        <td>${input}</td><td><button class="small pset"${prm.read_only ? " disabled" : ""}>set</button></td>`;
      tbody.appendChild(row);
    }
    if (focused === prm.name) continue;  // do not overwrite what the operator is typing
    const inp = row.querySelector<HTMLInputElement>(".pv")!;
    if (prm.type === "bool") inp.checked = !!prm.value;
    else inp.value = prm.type === "list" ? JSON.stringify(prm.value) : String(prm.value);
  }
}

const RENDER: Record<string, (d: Dict) => void> = {
  session: renderSession, recorder: renderRecorder, cameras: renderCameraStatus, trainer: renderTrainer,
  stats: renderTrainFacts, loss: renderLoss, datasets: renderDatasets, comparison: renderComparison,
  models: renderModels, workflow: renderWorkflow, analytics: renderAnalytics, params: renderParams,
};

function apply(topic: string, data: Dict): void {
  const base = topic.startsWith("camera/") ? "camera" : topic;
  if (base !== "loss") state[base === "camera" ? topic : base] = data;
  try {
    if (base === "camera") renderCamera(data);
    else RENDER[base]?.(data);
  } catch (e) {
    console.error(`render ${topic}`, e);
  }
  const log = window.__h1.log;
  log.push({ topic, t: Date.now(), message: data.message });
  if (log.length > 2000) log.splice(0, log.length - 2000);
}

function connect(): void {
  const es = new EventSource("/api/events");
  const conn = $("#conn");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "pill ok"; });
  es.addEventListener("error", () => {
    conn.textContent = "reconnecting"; conn.className = "pill bad";
    fetch("/api/state", { credentials: "same-origin" }).then((r) => { if (r.status === 401) location.href = "/login"; });
  });
  es.addEventListener("update", (ev) => {
    const msg = JSON.parse((ev as MessageEvent).data);
    apply(msg.topic, msg.data);
    if (window.__h1.ready === null && "session" in state) window.__h1.ready = performance.now();
  });
}

async function loadParams(): Promise<void> {
  const r = await fetch("/api/workflow/parameters", { credentials: "same-origin" });
  const d = await r.json().catch(() => ({}));
  if (r.ok) renderParams({ ...d, node: state.params?.node });
  else renderParams({ error: d.error ?? `HTTP ${r.status}` });
}

function wire(): void {
  document.querySelectorAll<HTMLButtonElement>("button[data-key]").forEach((b) =>
    b.addEventListener("click", () => post("/api/session/command", { key: b.dataset.key })));
  const note = () => ($("#label-note") as HTMLInputElement).value;
  $("#label-ok").addEventListener("click", () => post("/api/session/label", { success: true, note: note() }));
  $("#label-fail").addEventListener("click", () => post("/api/session/label", { success: false, note: note() }));

  $("#collect-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    post("/api/collection/start", {
      mode: ($("#collect-mode") as HTMLSelectElement).value,
      target_episodes: Number(($("#collect-target") as HTMLInputElement).value || 0),
    });
  });

  $("#train-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const hp: Dict = {};
    const lr = ($("#hp-lr") as HTMLInputElement).value, bs = ($("#hp-batch") as HTMLInputElement).value;
    const cs = ($("#hp-chunk") as HTMLInputElement).value;
    if (lr) hp.lr = Number(lr);
    if (bs) hp.batch_size = Number(bs);
    if (cs) hp.chunk_size = Number(cs);
    post("/api/training/start", {
      policy_type: ($("#policy-type") as HTMLSelectElement).value,
      dataset: ($("#train-dataset") as HTMLSelectElement).value,
      steps: Number(($("#train-steps") as HTMLInputElement).value || 0), hyperparameters: hp,
    });
  });
  $("#train-stop").addEventListener("click", () => post("/api/training/stop"));

  $("#datasets-refresh").addEventListener("click", () => post("/api/datasets/refresh"));
  $("#datasets-table").addEventListener("click", (ev) => {
    const t = ev.target as HTMLElement, row = t.closest("tr");
    const name = row?.getAttribute("data-name");
    if (!name) return;
    if (t.classList.contains("ds-export")) post("/api/datasets/export", { dataset: name, format: t.dataset.format });
    else if (t.classList.contains("ds-open")) { ev.preventDefault(); openDataset(name); }
  });
  $("#episode-list").addEventListener("click", (ev) => {
    const i = (ev.target as HTMLElement).dataset.index;
    if (i !== undefined) openEpisode(Number(i));
  });
  const episodeAction = async (path: string, extra: Dict = {}) => {
    if (!selected || selected.index === null) { toast("pick an episode first", false); return; }
    const ok = await post(path, { dataset: selected.dataset, index: selected.index, ...extra });
    if (ok && path.endsWith("flag")) openEpisode(selected.index);
  };
  $("#ep-flag").addEventListener("click", () => episodeAction("/api/datasets/flag", { flagged: true }));
  $("#ep-unflag").addEventListener("click", () => episodeAction("/api/datasets/flag", { flagged: false }));
  $("#ep-delete").addEventListener("click", () => {
    if (selected?.index != null && confirm(`Move episode ${selected.index} of ${selected.dataset} to the trash?`))
      episodeAction("/api/datasets/delete");
  });

  $("#cmp-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ids = Array.from(document.querySelectorAll<HTMLInputElement>("#cmp-models input:checked")).map((i) => i.value);
    post("/api/comparison/start", {
      model_ids: ids, mode: ($("#cmp-mode") as HTMLSelectElement).value,
      trials_per_model: Number(($("#cmp-trials") as HTMLInputElement).value || 0),
      alpha: Number(($("#cmp-alpha") as HTMLInputElement).value || 0),
    });
  });
  $("#cmp-stop").addEventListener("click", () => post("/api/comparison/stop"));
  $("#cmp-table").addEventListener("click", (ev) => {
    const t = ev.target as HTMLElement;
    if (t.classList.contains("deploy") && confirm(`Deploy ${t.dataset.model} to the robot?`))
      post("/api/models/deploy", { model_id: t.dataset.model });
  });

  $("#params").addEventListener("click", async (ev) => {
    const t = ev.target as HTMLElement;
    if (!t.classList.contains("pset")) return;
    const row = t.closest("tr")!, inp = row.querySelector<HTMLInputElement>(".pv")!;
    const type = row.dataset.type;
    let value: unknown = inp.value;
    if (type === "bool") value = inp.checked;
    else if (type === "int" || type === "float") value = inp.value.trim() === "" ? null : Number(inp.value);
    else if (type === "list") { try { value = JSON.parse(inp.value); } catch { toast("a list is JSON, e.g. [\"a\"]", false); return; } }
    const ok = await post("/api/workflow/parameters", { name: row.dataset.param, value });
    (document.activeElement as HTMLElement | null)?.blur();
    if (!ok) loadParams();  // show the value the node still holds, not the refused one
  });
}

wire();
connect();
loadParams();
