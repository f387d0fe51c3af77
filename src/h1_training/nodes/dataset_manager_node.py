"""dataset_manager: the RoArm seed's dataset browser backend for the H1 data (logic in h1_training.datasets).

    ros2 run h1_training dataset_manager --ros-args -p roots:="['data/h1_data', 'data/lerobot']"
    ros2 service call /lerobot/refresh_datasets std_srvs/srv/Empty
    ros2 topic echo /lerobot/dataset_list
    ros2 service call /lerobot/get_episode_info h1_training_interfaces/srv/GetEpisodeInfo \
        "{dataset: h1_data/training_session_epoch1, index: 0}"
    ros2 service call /lerobot/export_dataset h1_training_interfaces/srv/ExportDataset \
        "{dataset: h1_data/training_session_epoch1, format: hdf5}"     # output_path "": under export_dir

Playback (the Dataset Browser's player; logic in ``datasets/playback.py``)::

    ros2 service call /playback/load h1_training_interfaces/srv/PlaybackLoad \
        "{dataset: training_session_epoch1, index: 0, speed: 1.0, autoplay: true}"
    ros2 service call /playback/pause std_srvs/srv/Trigger        # /playback/play
    ros2 service call /playback/step h1_training_interfaces/srv/PlaybackStep "{frames: 1}"
    ros2 service call /playback/seek h1_training_interfaces/srv/PlaybackSeek "{frame: -1, time_s: 12.5}"
    ros2 topic echo /playback/status                               # latched: episode, frame, time, state
    ros2 param set /dataset_manager playback_speed 2.0             # at once, also while playing

publishes ``/playback/joint_states``, ``/playback/hand_states`` (sensor_msgs/JointState) and
``/playback/camera/<cam>/compressed`` (sensor_msgs/CompressedImage), stamped now.

Curation (names checked by ``datasets/paths.py``: no absolute paths, no ``..``, nothing outside the roots)::

    ros2 service call /lerobot/delete_episode h1_training_interfaces/srv/EpisodeAction \
        "{dataset: training_session_epoch1, index: 3}"      # -> <root>/.trash/<stamp>/..., path = the entry
    ros2 service call /lerobot/restore_episode h1_training_interfaces/srv/EpisodeAction "{dataset: <entry>}"
    ros2 service call /lerobot/set_episode_excluded h1_training_interfaces/srv/EpisodeAction \
        "{dataset: training_session_epoch1, index: 3, value: true, note: 'operator bumped the table'}"
    ros2 service call /lerobot/export_dataset h1_training_interfaces/srv/ExportDataset \
        "{dataset: training_session_epoch1, format: mcap}"  # Foxglove replays it with the images

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
from sensor_msgs.msg import CompressedImage, JointState
from std_srvs.srv import Empty, Trigger

from h1_training.datasets.catalog import Catalog, DatasetEntry, EpisodeEntry
from h1_training.datasets.export import (
    ExportJob,
    ExportResult,
    check_request,
    contained_output,
    default_output,
    export_dataset,
)
from h1_training.datasets.paths import check_name, inside, restore_episode, trash_episode
from h1_training.datasets.playback import Frame, Player
from h1_training.nodes.common import LATCHED_QOS, SENSOR_QOS, ParamsMixin, run_node
from h1_training.params import param
from h1_training.recording import layout as L
from h1_training.robot_model import ARM_JOINT_NAMES, HAND_JOINT_NAMES
from h1_training.stamps import set_stamp
from h1_training_interfaces.msg import DatasetInfo, DatasetList, EpisodeInfo, PlaybackStatus
from h1_training_interfaces.srv import (
    EpisodeAction,
    ExportDataset,
    GetEpisodeInfo,
    PlaybackLoad,
    PlaybackSeek,
    PlaybackStep,
)


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
    index_file: str = param("data/.catalog_index.sqlite3", "the catalog's episode index on disk (SQLite): a restart "
        "re-reads only the files that changed; empty = none (every start inspects every file); a damaged one is "
        "set aside and rebuilt", read_only=True)
    playback_speed: float = param(1.0, "playback speed (1 = the recorded rate); takes effect at once", min=0.01,
        max=100.0)


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
        self.catalog = Catalog(p["roots"], index_file=p["index_file"] or None)
        if self.catalog.index_note:
            self.get_logger().warning(self.catalog.index_note)
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
        # playback
        self._pb_joint = self.create_publisher(JointState, "/playback/joint_states", SENSOR_QOS)
        self._pb_hand = self.create_publisher(JointState, "/playback/hand_states", SENSOR_QOS)
        self._pb_cams: dict[str, Any] = {}
        self._pb_status = self.create_publisher(PlaybackStatus, "/playback/status", LATCHED_QOS)
        self.player = Player(self._publish_frame, on_status=self._publish_playback_status)
        self.create_service(PlaybackLoad, "/playback/load", self._on_pb_load, callback_group=self._query_group)
        self.create_service(Trigger, "/playback/play", lambda q, r: self._pb_call(r, self.player.play),
                            callback_group=self._query_group)
        self.create_service(Trigger, "/playback/pause", lambda q, r: self._pb_call(r, self.player.pause),
                            callback_group=self._query_group)
        self.create_service(PlaybackStep, "/playback/step",
                            lambda q, r: self._pb_call(r, lambda: self.player.step(q.frames)),
                            callback_group=self._query_group)
        self.create_service(PlaybackSeek, "/playback/seek", self._on_pb_seek, callback_group=self._query_group)
        self._publish_playback_status()
        # curation
        self.create_service(EpisodeAction, "/lerobot/delete_episode", self._on_delete, callback_group=self._scan_group)
        self.create_service(EpisodeAction, "/lerobot/restore_episode", self._on_restore,
                            callback_group=self._scan_group)
        self.create_service(EpisodeAction, "/lerobot/set_episode_excluded", self._on_exclude,
                            callback_group=self._scan_group)
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
                res.success, res.message = False, f"output_path refused: {reason}"
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
        if "playback_speed" in changed:
            self.player.set_speed(changed["playback_speed"])
        self.get_logger().info(f"parameters changed: {changed}")

    # --- episodes from requests -------------------------------------------------------------------------------
    def _episode(self, dataset: str, index: int) -> tuple[DatasetEntry, EpisodeEntry]:
        """The catalogued HDF5 episode, its file checked to lie inside the roots; ValueError with the reason."""
        check_name(dataset) if not Path(dataset).is_absolute() else None
        ds = self.catalog.find(dataset)
        if ds is None:
            raise ValueError(f"no dataset {dataset!r}; {self._known()}")
        if ds.format != "hdf5":
            raise ValueError(f"{ds.name} is a LeRobot dataset: only recorded HDF5 episodes can be played or curated")
        if not 0 <= index < len(ds.episodes):
            raise ValueError(f"episode index {index} out of range: {ds.name} has {len(ds.episodes)} episode(s)")
        ep = ds.episodes[index]
        inside(ep.path, self.catalog.roots)
        return ds, ep

    def _on_delete(self, req: EpisodeAction.Request, res: EpisodeAction.Response) -> EpisodeAction.Response:
        try:
            ds, ep = self._episode(req.dataset, req.index)
            entry = trash_episode(ep.path, self.catalog.roots)
        except (ValueError, OSError) as exc:
            res.success, res.message = False, str(exc)
            return res
        res.success, res.path = True, entry
        res.message = f"{ep.name} of {ds.name} moved to the trash as {entry} (restore with /lerobot/restore_episode)"
        self.get_logger().info(res.message)
        self.refresh(force=True)
        return res

    def _on_restore(self, req: EpisodeAction.Request, res: EpisodeAction.Response) -> EpisodeAction.Response:
        try:
            back = restore_episode(req.dataset, self.catalog.roots)
        except (ValueError, OSError) as exc:
            res.success, res.message = False, str(exc)
            return res
        res.success, res.path, res.message = True, str(back), f"restored {back}"
        self.get_logger().info(res.message)
        self.refresh(force=True)
        return res

    def _on_exclude(self, req: EpisodeAction.Request, res: EpisodeAction.Response) -> EpisodeAction.Response:
        try:
            ds, ep = self._episode(req.dataset, req.index)
            before = L.set_excluded(ep.path, req.value, req.note)
        except (ValueError, OSError) as exc:
            res.success, res.message = False, str(exc)
            return res
        res.success, res.path = True, ep.path
        what = "excluded from training" if req.value else "included in training"
        res.message = f"{ep.name} of {ds.name} {what}" + (" (no change)" if before == req.value else "")
        self.get_logger().info(res.message)
        self.refresh(force=True)
        return res

    # --- playback -------------------------------------------------------------------------------------------
    def _publish_frame(self, frame: Frame) -> None:
        stamp = self.get_clock().now().to_msg()
        js = JointState(name=list(ARM_JOINT_NAMES), position=frame.qpos.tolist())
        js.header.stamp, js.header.frame_id = stamp, "playback"
        self._pb_joint.publish(js)
        if frame.hand_state is not None:
            hs = JointState(name=list(HAND_JOINT_NAMES), position=frame.hand_state.tolist())
            hs.header.stamp, hs.header.frame_id = stamp, "playback"
            self._pb_hand.publish(hs)
        for cam, jpeg in frame.images.items():
            pub = self._pb_cams.get(cam)
            if pub is None:
                pub = self._pb_cams[cam] = self.create_publisher(
                    CompressedImage, f"/playback/camera/{cam}/compressed", SENSOR_QOS)
            img = CompressedImage(format="jpeg", data=jpeg)
            img.header.stamp, img.header.frame_id = stamp, cam
            pub.publish(img)

    def _playback_status(self) -> PlaybackStatus:
        pl = self.player
        src = pl.source
        st = PlaybackStatus(state=int(pl.state), state_name=pl.state.name, dataset=pl.name[0], index=pl.name[1],
                            message=pl.message)
        st.header.stamp = self.get_clock().now().to_msg()
        if src is not None:
            st.path, st.frames, st.fps = str(src.path), src.frames, src.fps
            st.frame, st.time_s = pl.next_frame, pl.last_time_s
            st.duration_s = src.frames / src.fps
            st.speed = pl._clock.speed if pl._clock is not None else 1.0
        return st

    def _publish_playback_status(self) -> None:
        self._pb_status.publish(self._playback_status())

    def _pb_call(self, res: Any, fn: Any) -> Any:
        try:
            fn()
            res.success, res.message = True, self.player.message
        except ValueError as exc:
            res.success, res.message = False, str(exc)
        if hasattr(res, "status"):
            res.status = self._playback_status()
        return res

    def _on_pb_load(self, req: PlaybackLoad.Request, res: PlaybackLoad.Response) -> PlaybackLoad.Response:
        def load() -> None:
            ds, ep = self._episode(req.dataset, req.index)
            if not ep.valid:
                raise ValueError(f"{ep.name} cannot be played: {'; '.join(ep.problems)}")
            self.player.load(ep.path, ds.name, req.index, req.speed or self.p["playback_speed"], req.autoplay)
        return self._pb_call(res, load)

    def _on_pb_seek(self, req: PlaybackSeek.Request, res: PlaybackSeek.Response) -> PlaybackSeek.Response:
        if req.frame >= 0:
            return self._pb_call(res, lambda: self.player.seek(frame=req.frame))
        return self._pb_call(res, lambda: self.player.seek(time_s=req.time_s))

    def close(self) -> None:
        self.player.close()
        if self.export_job.running:
            self.get_logger().info("stopping the running export")
        self.export_job.stop()


def main(args: list[str] | None = None) -> None:
    run_node(DatasetManagerNode, args, threads=4)


if __name__ == "__main__":
    main()
