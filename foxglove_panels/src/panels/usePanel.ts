// The one piece of Foxglove wiring every panel shares (create-foxglove-extension ExamplePanel pattern): onRender set
// once, watch what is needed, subscribe to the panel's topics, keep the latest message per topic, call done.
import type { PanelExtensionContext } from "@foxglove/extension";
import { useEffect, useLayoutEffect, useState } from "react";

import { latestByTopic } from "../ros";

export function useLatestMessages(context: PanelExtensionContext, topics: readonly string[]): Map<string, unknown> {
  const [latest] = useState(() => new Map<string, unknown>());
  const [, setVersion] = useState(0);
  const [renderDone, setRenderDone] = useState<(() => void) | undefined>();

  useLayoutEffect(() => {
    context.onRender = (renderState, done) => {
      if (latestByTopic(renderState.currentFrame, latest)) {
        setVersion((v) => v + 1);
      }
      setRenderDone(() => done);
    };
    context.watch("currentFrame");
    context.subscribe(topics.map((topic) => ({ topic })));
    return () => {
      context.onRender = undefined;
      context.unsubscribeAll();
    };
  }, [context, latest, topics]);

  useEffect(() => {
    renderDone?.();
  }, [renderDone]);
  return latest;
}

export const styles = {
  panel: { padding: "0.5rem", fontFamily: "sans-serif", fontSize: "0.85rem", overflow: "auto", height: "100%" },
  title: { fontSize: "1.2rem", fontWeight: 700, margin: "0.2rem 0" },
  error: { color: "#d32f2f", fontWeight: 600 },
  ok: { color: "#2e7d32" },
  warn: { color: "#ed6c02" },
  row: { display: "flex", gap: "0.4rem", flexWrap: "wrap" as const, margin: "0.3rem 0" },
  muted: { opacity: 0.7 },
};
