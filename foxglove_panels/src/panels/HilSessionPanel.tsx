import type { PanelExtensionContext } from "@foxglove/extension";
import { type ReactElement, useState } from "react";
import { createRoot } from "react-dom/client";

import { type CameraStatus, hilView, keyRequest, labelRequest, type SessionStatus } from "../hilSession";
import type { RecorderStatus } from "../recorderStatus";
import { callForOperator, type CallResult, capabilitiesOf, TOPICS } from "../ros";
import { styles, useLatestMessages } from "./usePanel";

const WATCHED = [TOPICS.sessionStatus, TOPICS.recorderStatus, TOPICS.cameraStatus];

function HilSessionPanel({ context }: { context: PanelExtensionContext }): ReactElement {
  const latest = useLatestMessages(context, WATCHED);
  const [result, setResult] = useState<CallResult | undefined>();
  const caps = capabilitiesOf(context);
  const view = hilView(latest.get(TOPICS.sessionStatus) as SessionStatus | undefined,
    latest.get(TOPICS.recorderStatus) as RecorderStatus | undefined,
    latest.get(TOPICS.cameraStatus) as CameraStatus | undefined, caps.services);
  const call = (req: { service: string; request: unknown }) => {
    void callForOperator(context.callService?.bind(context), req.service, req.request).then(setResult);
  };
  return (
    <div style={styles.panel} data-panel="hil-session">
      <div style={styles.title} data-testid="state">{view.title}</div>
      <div data-testid="prompt">{view.prompt}</div>
      {view.error !== "" && <div style={styles.error}>{view.error}</div>}
      <div style={styles.row}>
        {caps.services ? view.keys.map((k) => (
          <button key={k.key} data-key={k.key} disabled={!k.enabled} onClick={() => call(keyRequest(k.key))}>
            {k.label}</button>
        )) : <span style={styles.muted}>this connection cannot call services: keys are read-only here</span>}
      </div>
      {caps.services && (
        <div style={styles.row}>
          <button data-label="success" disabled={!view.canLabel} onClick={() => call(labelRequest(true))}>
            label success</button>
          <button data-label="failure" disabled={!view.canLabel} onClick={() => call(labelRequest(false))}>
            label failure</button>
        </div>
      )}
      {result && <div data-testid="result" style={result.ok ? styles.ok : styles.error}>{result.message}</div>}
      {view.details.map((line) => <div key={line}>{line}</div>)}
      <h4>recorder: <span style={styles[view.recorder.severity === "ok" ? "ok" : view.recorder.severity === "warn"
        ? "warn" : "error"]}>{view.recorder.title}</span></h4>
      {view.recorder.lines.map((line) => <div key={line}>{line}</div>)}
      <h4>cameras</h4>
      {view.cameras.length === 0 ? <div style={styles.muted}>no camera status</div>
        : view.cameras.map((c) => <div key={c.name} style={c.ok ? styles.ok : styles.error}>{c.line}</div>)}
    </div>
  );
}

export function initHilSessionPanel(context: PanelExtensionContext): () => void {
  const root = createRoot(context.panelElement);
  root.render(<HilSessionPanel context={context} />);
  return () => root.unmount();
}
