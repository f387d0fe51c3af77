"""dataset_manager: the RoArm seed's dataset browser backend for the H1 data (logic in h1_training.datasets).

    ros2 run h1_training dataset_manager --ros-args -p roots:="['data/h1_data', 'data/lerobot']"
    ros2 service call /lerobot/refresh_datasets std_srvs/srv/Empty
    ros2 topic echo /lerobot/dataset_list
    ros2 service call /lerobot/get_episode_info h1_training_interfaces/srv/GetEpisodeInfo \
        "{dataset: h1_data/training_session_epoch1, index: 0}"
    ros2 service call /lerobot/export_dataset h1_training_interfaces/srv/ExportDataset \
        "{dataset: h1_data/training_session_epoch1, format: hdf5}"     # output_path "": under export_dir

Topic ``/lerobot/dataset_list`` (latched) is published after the start-up scan, whenever a periodic refresh finds
a change, and after every ``/lerobot/refresh_datasets`` call (which returns once the new list is out). An export
runs in a worker thread; its service call returns when it has finished, with the outcome, while the node keeps
answering the other services; a second export request meanwhile is refused with the reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Empty

from h1_training.datasets.catalog import Catalog, DatasetEntry, EpisodeEntry
from h1_training.datasets.export import (
    ExportJob,
    ExportResult,
    check_request,
    contained_output,
    default_output,
    export_dataset,
)
from h1_training.nodes.common import LATCHED_QOS, ParamsMixin, run_node
from h1_training.params import param
from h1_training.stamps import set_stamp
from h1_training_interfaces.msg import DatasetInfo, DatasetList, EpisodeInfo
from h1_training_interfaces.srv import ExportDataset, GetEpisodeInfo


@dataclass
class DatasetManagerNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    roots: list[str] = param(["data"], "folders scanned (6 levels deep) for training_session_epoch*/episode_*.hdf5 "
        "sessions and LeRobot datasets (meta/info.json); relative to the working directory")
    export_dir: str = param("data/exports", "the only folder /lerobot/export_dataset writes into: output_path "
        "is taken inside it (relative, or absolute within it; '..' and symlinks cannot lead out); empty "
        "output_path: <export_dir>/<dataset>_<format>_<time>")
    refresh_period_s: float = param(10.0, "rescan the roots this often [s] (unchanged files cost a stat each); "
        "0 = only at start-up and on /lerobot/refresh_datasets", min=0.0, max=86400.0)


PARAMS = DatasetManagerNodeParams


def _time(ns: int) -> Time:
    return set_stamp(Time(), ns=ns)


def dataset_msg(ds: DatasetEntry) -> DatasetInfo:
    return DatasetInfo(
        name=ds.name, path=ds.path, format=ds.format, created=_time(ds.created_ns), num_episodes=len(ds.episodes),
        total_frames=ds.total_frames, duration_s=float(ds.duration_s), fps=float(ds.fps),
        size_mb=ds.size_bytes / 1e6, quality_score=float(ds.quality), success_rate=float(ds.success_rate),
        problems=ds.problems,
    )


def episode_msg(ds: DatasetEntry, ep: EpisodeEntry) -> EpisodeInfo:
    return EpisodeInfo(
        dataset=ds.name, index=ep.index, path=ep.path, frames=ep.frames, duration_s=float(ep.duration_s),
        fps=float(ep.fps), policy_frames=ep.policy_frames, human_frames=ep.human_frames,
        missed_ticks=ep.missed_ticks, success=ep.success, quality_score=float(ep.quality),
        model_version=ep.model_version, problems=ep.problems,
    )


class DatasetManagerNode(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("dataset_manager")
        p = self.declare_specs()
        self.catalog = Catalog(p["roots"])
        self.export_job = ExportJob()
        self._published: tuple | None = None
        self._pub_lock = threading.Lock()
        self._scan_group = MutuallyExclusiveCallbackGroup()   # refreshes one at a time
        self._query_group = ReentrantCallbackGroup()           # answered from the last snapshot, even mid-scan
        self._export_group = ReentrantCallbackGroup()          # a second export request is answered (refused)
        self._list_pub = self.create_publisher(DatasetList, "/lerobot/dataset_list", LATCHED_QOS)
        self.create_service(Empty, "/lerobot/refresh_datasets", self._on_refresh, callback_group=self._scan_group)
        self.create_service(GetEpisodeInfo, "/lerobot/get_episode_info", self._on_episode_info,
                            callback_group=self._query_group)
        self.create_service(ExportDataset, "/lerobot/export_dataset", self._on_export,
                            callback_group=self._export_group)
        self._timer = None
        self._make_timer()
        # the first scan may inspect many files: the services are up meanwhile (lists from an empty snapshot)
        self._startup = self.create_timer(0.0, self._first_scan, callback_group=self._scan_group)
        every = f"every {p['refresh_period_s']:g} s" if p["refresh_period_s"] else "on request only"
        self.get_logger().info(f"dataset_manager ready: roots {', '.join(p['roots'])}; exports to "
                               f"{p['export_dir']}; refresh {every}")

    # --- scanning ---------------------------------------------------------------------------------------------
    def _make_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        period = self.p["refresh_period_s"]
        if period > 0:
            self._timer = self.create_timer(period, lambda: self.refresh(force=False), callback_group=self._scan_group)

    def _first_scan(self) -> None:
        self._startup.cancel()  # one shot
        self.refresh(force=True)

    def refresh(self, force: bool) -> None:
        """Rescan; publish when something changed, or always when ``force`` (an explicit request)."""
        t0 = time.monotonic()
        try:
            self.catalog.refresh()
        except Exception as exc:  # noqa: BLE001 - a scan error must not kill the node; the old list stays
            self.get_logger().error(f"refresh failed: {type(exc).__name__}: {exc}")
            return
        st = self.catalog.last
        if st.missing_roots:
            self.get_logger().warning(f"roots not found: {', '.join(st.missing_roots)}",
                                      throttle_duration_sec=60.0)
        if st.inspected or st.lerobot_read or force:
            self.get_logger().info(f"{st.datasets} dataset(s), {st.episodes} episode(s); inspected {st.inspected} "
                                   f"file(s) in {time.monotonic() - t0:.2f} s")
        self.publish_list(force)

    def publish_list(self, force: bool = True) -> None:
        with self._pub_lock:  # the catalog's latest snapshot, so two racing refreshes never publish an older one
            self._publish_locked(force)

    def _publish_locked(self, force: bool) -> None:
        infos = [dataset_msg(ds) for ds in self.catalog.datasets]
        signature = tuple(
            (i.name, i.path, i.num_episodes, i.total_frames, round(i.size_mb, 6), i.quality_score, i.success_rate,
             tuple(i.problems)) for i in infos)
        if not force and signature == self._published:
            return
        self._published = signature
        msg = DatasetList(datasets=infos)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._list_pub.publish(msg)

    def _on_refresh(self, req: Empty.Request, res: Empty.Response) -> Empty.Response:
        self.refresh(force=True)
        return res

    # --- queries ----------------------------------------------------------------------------------------------
    def _known(self) -> str:
        names = [ds.name for ds in self.catalog.datasets]
        if not names:
            return "no datasets found under " + ", ".join(self.p["roots"]) + " (call /lerobot/refresh_datasets?)"
        return "known: " + ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    def _on_episode_info(self, req: GetEpisodeInfo.Request, res: GetEpisodeInfo.Response) -> GetEpisodeInfo.Response:
        ds = self.catalog.find(req.dataset)
        if ds is None:
            res.success, res.message = False, f"no dataset {req.dataset!r}; {self._known()}"
            return res
        n = len(ds.episodes)
        if not 0 <= req.index < n:
            res.success = False
            res.message = (f"episode index {req.index} out of range: {ds.name} has {n} episode(s)"
                           + (f" (0..{n - 1})" if n else ""))
            return res
        ep = ds.episodes[req.index]
        res.success, res.episode = True, episode_msg(ds, ep)
        res.message = f"{ep.name}: quality {ep.quality:.0f}" + (f" ({'; '.join(ep.problems)})" if ep.problems else "")
        return res

    # --- export -----------------------------------------------------------------------------------------------
    def _on_export(self, req: ExportDataset.Request, res: ExportDataset.Response) -> ExportDataset.Response:
        ds = self.catalog.find(req.dataset)
        if ds is None:
            res.success, res.message = False, f"no dataset {req.dataset!r}; {self._known()}"
            return res
        fmt = req.format.strip().lower()
        if req.output_path:
            contained, reason = contained_output(self.p["export_dir"], req.output_path)
            if contained is None:
                res.success, res.message = False, reason
                return res
            out = contained
        else:
            out = default_output(self.p["export_dir"], ds, fmt)
        reason = check_request(ds, fmt, out)
        if reason:
            res.success, res.message = False, reason
            return res
        finished = threading.Event()
        outcome: list[ExportResult] = []

        def done(result: ExportResult) -> None:
            outcome.append(result)
            finished.set()

        refused = self.export_job.start(
            f"{ds.name} as {fmt} to {out}",
            lambda cancel: export_dataset(ds, fmt, out, cancel=cancel, log=self.get_logger().debug), done)
        if refused:
            res.success, res.message = False, refused
            return res
        self.get_logger().info(f"export started: {ds.name} as {fmt} to {out}")
        finished.wait()  # this executor thread waits; the other callback groups keep being served
        result = outcome[0]
        if result.ok:
            self.get_logger().info(f"export: {result.message}")
        else:
            self.get_logger().error(f"export: {result.message}")
        res.success, res.message, res.output_path = result.ok, result.message, result.output_path
        if result.ok and self._under_roots(Path(result.output_path)):
            threading.Thread(target=self.refresh, args=(True,), daemon=True).start()  # show it in the list
        return res

    def _under_roots(self, path: Path) -> bool:
        path = path.resolve()
        return any(r.resolve() == path or r.resolve() in path.parents for r in self.catalog.roots)

    # --- parameters -------------------------------------------------------------------------------------------
    def on_params_changed(self, changed: dict[str, Any]) -> None:
        if "roots" in changed:
            self.catalog.set_roots(changed["roots"])
            threading.Thread(target=self.refresh, args=(True,), daemon=True).start()
        if "refresh_period_s" in changed:
            self._make_timer()
        self.get_logger().info(f"parameters changed: {changed}")

    def close(self) -> None:
        if self.export_job.running:
            self.get_logger().info("stopping the running export")
        self.export_job.stop()


def main(args: list[str] | None = None) -> None:
    run_node(DatasetManagerNode, args, threads=4)


if __name__ == "__main__":
    main()
