import type { PanelExtensionContext } from "@foxglove/extension";
import { type ReactElement, useState } from "react";
import { createRoot } from "react-dom/client";

import { datasetLine, type DatasetList, deleteRequest, episodeDetails, type EpisodeInfo, episodeLine,
  episodeRequests, exportRequest, flagRequest, playbackLine, type PlaybackAction, playbackRequest,
  type PlaybackStatus } from "../datasetBrowser";
import { callForOperator, type CallResult, capabilitiesOf, SERVICES, TOPICS } from "../ros";
import { styles, useLatestMessages } from "./usePanel";

const WATCHED = [TOPICS.datasetList, TOPICS.playbackStatus];

function DatasetBrowserPanel({ context }: { context: PanelExtensionContext }): ReactElement {
  const latest = useLatestMessages(context, WATCHED);
  const [selected, setSelected] = useState<string | undefined>();
  const [episodes, setEpisodes] = useState<EpisodeInfo[]>([]);
  const [episode, setEpisode] = useState<EpisodeInfo | undefined>();
  const [seek, setSeek] = useState("0");
  const [result, setResult] = useState<CallResult | undefined>();
  const caps = capabilitiesOf(context);
  const call = context.callService?.bind(context);
  const list = (latest.get(TOPICS.datasetList) as DatasetList | undefined)?.datasets ?? [];
  const dataset = list.find((d) => d.name === selected);

  const open = async (name: string) => {
    setSelected(name);
    setEpisode(undefined);
    setEpisodes([]);
    const ds = list.find((d) => d.name === name);
    if (!ds) return;
    const found: EpisodeInfo[] = [];
    for (const req of episodeRequests(ds)) {
      const r = await callForOperator(call, req.service, req.request);
      if (!r.ok) {
        setResult(r);
        continue;
      }
      found.push((r.response as { episode: EpisodeInfo }).episode);
      setEpisodes([...found]);
    }
  };
  const run = (req: { service: string; request: unknown }) => {
    void callForOperator(call, req.service, req.request).then(setResult);
  };
  const playback = (action: PlaybackAction, arg = 0) => {
    if (!episode) return;
    try {
      run(playbackRequest(action, episode, arg,
        latest.get(TOPICS.playbackStatus) as PlaybackStatus | undefined));
    } catch (err) {
      setResult({ ok: false, message: err instanceof Error ? err.message : String(err) });
    }
  };
  return (
    <div style={styles.panel} data-panel="dataset-browser">
      <div style={styles.row}>
        <span style={styles.title}>datasets</span>
        {caps.services && <button onClick={() => run({ service: SERVICES.refreshDatasets, request: {} })}>
          refresh</button>}
      </div>
      {list.length === 0 && <div style={styles.muted}>no datasets (topic /lerobot/dataset_list)</div>}
      {list.map((ds) => (
        <div key={ds.name} data-dataset={ds.name} style={{ cursor: "pointer", fontWeight: ds.name === selected ? 700
          : 400 }} onClick={() => caps.services && void open(ds.name)}>{datasetLine(ds)}</div>
      ))}
      {!caps.services && list.length > 0 && <div style={styles.muted}>episode details need service calls</div>}
      {dataset && (
        <>
          <h4>episodes of {dataset.name}</h4>
          {episodes.map((ep) => (
            <div key={ep.index} data-episode={ep.index} style={{ cursor: "pointer", fontWeight: ep === episode ? 700
              : 400 }} onClick={() => setEpisode(ep)}>{episodeLine(ep)}</div>
          ))}
          <div style={styles.row}>
            <button onClick={() => run(exportRequest(dataset, "lerobot"))}>export LeRobot</button>
            <button onClick={() => run(exportRequest(dataset, "hdf5"))}>export HDF5</button>
            <button onClick={() => run(exportRequest(dataset, "mcap"))}>export MCAP</button>
          </div>
        </>
      )}
      {episode && (
        <>
          <h4>episode {episode.index}</h4>
          {episodeDetails(episode).map((line) => <div key={line}>{line}</div>)}
          <div style={styles.row}>
            <button onClick={() => playback("play", 1)}>play</button>
            <button onClick={() => playback("pause")}>pause</button>
            <button onClick={() => playback("step", 1)}>step</button>
            <input aria-label="seek seconds" value={seek} size={5} onChange={(e) => setSeek(e.target.value)} />
            <button onClick={() => playback("seek", Number(seek))}>seek</button>
            <button onClick={() => run(flagRequest(episode, true))}>flag (exclude)</button>
            <button onClick={() => run(deleteRequest(episode))}>delete (to trash)</button>
          </div>
        </>
      )}
      <div data-testid="playback">{playbackLine(latest.get(TOPICS.playbackStatus) as PlaybackStatus | undefined)}</div>
      {result && <div data-testid="result" style={result.ok ? styles.ok : styles.error}>{result.message}</div>}
    </div>
  );
}

export function initDatasetBrowserPanel(context: PanelExtensionContext): () => void {
  const root = createRoot(context.panelElement);
  root.render(<DatasetBrowserPanel context={context} />);
  return () => root.unmount();
}
