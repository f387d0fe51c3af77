import type { PanelExtensionContext } from "@foxglove/extension";
import { type ReactElement, useState } from "react";
import { createRoot } from "react-dom/client";

import { callForOperator, type CallResult, capabilitiesOf, TOPICS } from "../ros";
import { ACTIONS, dashboardView, type PerformanceAnalytics, polyline, type TrainerStatus, TrainingHistory,
  type TrainingStats, type WorkflowStatus } from "../trainingDashboard";
import { styles, useLatestMessages } from "./usePanel";

const WATCHED = [TOPICS.trainerStatus, TOPICS.trainingStats, TOPICS.workflowStatus, TOPICS.performance];

function TrainingDashboardPanel({ context }: { context: PanelExtensionContext }): ReactElement {
  const latest = useLatestMessages(context, WATCHED);
  const [history] = useState(() => new TrainingHistory());
  const [result, setResult] = useState<CallResult | undefined>();
  const stats = latest.get(TOPICS.trainingStats) as TrainingStats | undefined;
  const perf = latest.get(TOPICS.performance) as PerformanceAnalytics | undefined;
  if (stats) history.addStats(stats);
  if (perf && history.success[history.success.length - 1]?.y !== perf.recent_success_rate) history.addPerformance(perf);
  const caps = capabilitiesOf(context);
  const view = dashboardView(latest.get(TOPICS.trainerStatus) as TrainerStatus | undefined, stats,
    latest.get(TOPICS.workflowStatus) as WorkflowStatus | undefined, perf, caps.services);
  const act = (name: keyof typeof ACTIONS) => {
    void callForOperator(context.callService?.bind(context), ACTIONS[name].service, ACTIONS[name].request)
      .then(setResult);
  };
  return (
    <div style={styles.panel} data-panel="training-dashboard">
      <div style={styles.title} data-testid="epoch">{view.epochText}</div>
      <div style={{ background: "#8883", height: "0.8rem", borderRadius: 4 }}>
        <div data-testid="progress" style={{ width: `${view.progressPct}%`, height: "100%", background: "#1976d2",
          borderRadius: 4 }} />
      </div>
      <div>{view.progressPct.toFixed(0)}% · loss <b data-testid="loss">{view.lossText}</b> · lr {view.learningRateText}
        {" "}· ETA {view.etaText}</div>
      <div>{view.stateText}</div>
      <div>{view.stageText}</div>
      <svg width="100%" viewBox="0 0 300 80" preserveAspectRatio="none" data-testid="loss-curve">
        <polyline fill="none" stroke="#1976d2" strokeWidth="1.5" points={polyline(history.loss, 300, 80)} />
      </svg>
      <svg width="100%" viewBox="0 0 300 40" preserveAspectRatio="none" data-testid="success-curve">
        <polyline fill="none" stroke="#2e7d32" strokeWidth="1.5" points={polyline(history.success, 300, 40)} />
      </svg>
      {caps.services ? (
        <div style={styles.row}>
          <button disabled={!view.buttons.start} onClick={() => act("start")}>start training</button>
          <button disabled={!view.buttons.pause} onClick={() => act("pause")}>pause</button>
          <button disabled={!view.buttons.resume} onClick={() => act("resume")}>resume</button>
          <button disabled={!view.buttons.stop} onClick={() => act("stop")}>stop</button>
        </div>
      ) : <div style={styles.muted}>this connection cannot call services</div>}
      {result && <div data-testid="result" style={result.ok ? styles.ok : styles.error}>{result.message}</div>}
      <h4>recommendations</h4>
      {view.recommendations.length === 0 ? <div style={styles.muted}>none</div>
        : view.recommendations.map((r) => <div key={r}>• {r}</div>)}
    </div>
  );
}

export function initTrainingDashboardPanel(context: PanelExtensionContext): () => void {
  const root = createRoot(context.panelElement);
  root.render(<TrainingDashboardPanel context={context} />);
  return () => root.unmount();
}
