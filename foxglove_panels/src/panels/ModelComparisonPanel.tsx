import type { PanelExtensionContext } from "@foxglove/extension";
import { type ReactElement, useState } from "react";
import { createRoot } from "react-dom/client";

import { type ComparisonStatus, comparisonView, deployRequest, type Mode, parseModels, selectionProblem,
  startRequest, STOP } from "../modelComparison";
import { callForOperator, type CallResult, capabilitiesOf, TOPICS } from "../ros";
import { styles, useLatestMessages } from "./usePanel";

const WATCHED = [TOPICS.comparisonStatus];

function ModelComparisonPanel({ context }: { context: PanelExtensionContext }): ReactElement {
  const latest = useLatestMessages(context, WATCHED);
  const [text, setText] = useState("");
  const [mode, setMode] = useState<Mode>("ab");
  const [result, setResult] = useState<CallResult | undefined>();
  const caps = capabilitiesOf(context);
  const status = latest.get(TOPICS.comparisonStatus) as ComparisonStatus | undefined;
  const view = comparisonView(status);
  const models = parseModels(text);
  const problem = selectionProblem(models, mode);
  const deploy = deployRequest(status);
  const run = (req: { service: string; request: unknown }) => {
    void callForOperator(context.callService?.bind(context), req.service, req.request).then(setResult);
  };
  return (
    <div style={styles.panel} data-panel="model-comparison">
      <div style={styles.title} data-testid="title">{view.title}</div>
      {view.rows.map((row) => (
        <div key={row.id} data-model={row.id} style={row.winner ? styles.ok : undefined}>
          {row.text}
          <div style={{ position: "relative", height: 6, background: "#8883" }}>
            <div style={{ position: "absolute", left: `${row.ciLow * 100}%`, width: `${(row.ciHigh - row.ciLow) * 100}%`,
              height: "100%", background: "#1976d288" }} />
            <div style={{ position: "absolute", left: `${row.rate * 100}%`, width: 2, height: "100%",
              background: "#1976d2" }} />
          </div>
        </div>
      ))}
      <div data-testid="evidence">{view.evidence}</div>
      {view.details.map((line) => <div key={line.slice(0, 24)} style={styles.muted}>{line}</div>)}
      <div data-testid="decision"><b>{view.decision}</b></div>
      {caps.services ? (
        <>
          <div style={styles.row}>
            <input aria-label="models" placeholder="model ids, e.g. v1 v2" value={text}
              onChange={(e) => setText(e.target.value)} />
            <select aria-label="mode" value={mode} onChange={(e) => setMode(e.target.value as Mode)}>
              <option value="ab">A/B test (2 models)</option>
              <option value="detailed">detailed (2-4 models)</option>
            </select>
            <button disabled={problem !== undefined || view.running}
              onClick={() => run(startRequest(models, mode))}>start</button>
            <button disabled={!view.running} onClick={() => run(STOP)}>stop</button>
            <button disabled={deploy === undefined} onClick={() => deploy && run(deploy)}>deploy winner</button>
          </div>
          {problem && text !== "" && <div style={styles.warn}>{problem}</div>}
        </>
      ) : <div style={styles.muted}>this connection cannot call services</div>}
      {result && <div data-testid="result" style={result.ok ? styles.ok : styles.error}>{result.message}</div>}
    </div>
  );
}

export function initModelComparisonPanel(context: PanelExtensionContext): () => void {
  const root = createRoot(context.panelElement);
  root.render(<ModelComparisonPanel context={context} />);
  return () => root.unmount();
}
