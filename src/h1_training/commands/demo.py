"""The main job in simulation: a pixel policy that gets better because of a person's corrections.

``h1-training demo`` (what ``make demo`` runs) is the learning loop of ``workflow/sim_learning.py``: a reach task
whose object lies somewhere else on the table every episode (seen only by the head camera), a keypoint image
policy trained by the GPU server's epoch watcher (``h1-training serve --auto-train``) on every epoch so far with
the simulated person's corrections weighted up, hot-swapped, and evaluated alone on the same seeded episodes after
every epoch; then a blinded A/B comparison of the first and the last model through ``model_comparison``. It prints
per epoch the episodes, success (95 % Wilson interval), intervention rate, human frames, mean time to success,
training loss and time; saves a learning curve PNG next to the data; Ctrl+C stops it with everything so far saved.

    h1-training demo                                  # seed 0, 4 demonstrations + 5 HIL epochs x 10 episodes
    h1-training demo --seed 1 --json                  # one JSON document at the end
    h1-training demo --epochs 2 --episodes 6 --eval-episodes 10 --train-steps 400 --no-ab   # shorter
    h1-training demo --stack                          # the ROS plumbing check: sim stack + hil_session + sim_operator,
                                                      # the scripted-fit fixture as "training" (learns nothing)
    h1-training demo --direct                         # the sim profile + the single-process scripted operator

``--stack`` runs the whole robot-side ROS stack (arm/hand/camera drivers against the emulators, recorder,
hil_session, rsync) with the scripted fit, which copies the operator's final pose: a test of the wiring, not of
learning. ``--direct`` runs the earlier demo: no policy server and no hil_session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from h1_training.bench.report import size_arg

HELP = "run the simulated human-in-the-loop training loop end to end (robot, session, operator, GPU server)"

LOOP_DEFAULTS = {"episodes": 1, "policy_seconds": 4.0, "human_seconds": 3.0}
DIRECT_DEFAULTS = {"episodes": 2, "policy_seconds": 6.0, "human_seconds": 6.0}
PROFILE = "sim_hil"
SERVER_EXE, SESSION_EXE, RECORDER_EXE = "h1-training", "hil_session", "episode_recorder"
GATEWAY_EXE = "foxglove_gateway"  # its URL is printed: Foxglove Studio connects there
WEB_EXE, WEB_PORT = "training_web_app", 8080
# the learning demo's flags that are LearningConfig fields of the same name (None: the field's default)
LEARNING_FLAGS = ("epochs", "episodes", "demos", "eval_episodes", "ab_trials", "train_steps", "lr", "human_weight",
                  "pre_intervention_s", "action_lookahead_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", action="store_true",
                        help="the ROS plumbing check (sim stack, hil_session, sim_operator, scripted-fit fixture)")
    parser.add_argument("--direct", action="store_true",
                        help="the sim profile and sim_operator alone: no policy server, no hil_session, no retraining")
    parser.add_argument("--epochs", type=int, default=None,
                        help="HIL epochs after the demonstrations (default 5; --stack: epochs, default 2)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="HIL episodes per epoch (default 30; --stack 1); with --direct: episodes in all (2)")
    learn = parser.add_argument_group("the learning demo (default mode)")
    learn.add_argument("--seed", type=int, default=0, help="seed of the objects' places and the person (default 0)")
    learn.add_argument("--demos", type=int, default=None, help="demonstrations in epoch 0 (default 4)")
    learn.add_argument("--eval-episodes", type=int, default=None,
                       help="seeded episodes the policy runs alone after every epoch (default 20)")
    learn.add_argument("--ab-trials", type=int, default=None, help="planned A/B trials per model (default 40)")
    learn.add_argument("--no-ab", action="store_true", help="skip the final A/B comparison")
    learn.add_argument("--train-steps", type=int, default=None,
                       help="training steps per epoch on the server (default 1000, batch 64)")
    learn.add_argument("--lr", type=float, default=None,
                       help="learning rate of each epoch's job (cosine to a tenth of it; default 1e-3)")
    learn.add_argument("--human-weight", type=float, default=None,
                       help="sampling weight of the person's frames against the policy's 1 (default 3)")
    learn.add_argument("--pre-intervention-s", type=float, default=None,
                       help="policy frames this long before a takeover are not learned from (default 1.5)")
    learn.add_argument("--action-lookahead-s", type=float, default=None,
                       help="a person's frame is learned as 'go where the person had the arm this much later' "
                            "(default 2.0)")
    learn.add_argument("--image-size", type=size_arg, default=None, metavar="WxH",
                       help="the head camera's image size the policy learns from (default 96x72)")
    learn.add_argument("--json", action="store_true", help="print the summary as one JSON document at the end")
    learn.add_argument("--verbose", action="store_true", help="echo the server's and nodes' logs")
    learn.add_argument("--no-view", action="store_true",
                       help="without the operator's view (workflow manager, dataset manager, model comparison, "
                            "Foxglove gateway, web app)")
    parser.add_argument("--policy-seconds", type=float, default=None,
                        help="time the policy drives per episode (default 4; --direct 6)")
    parser.add_argument("--human-seconds", type=float, default=None,
                        help="time the operator corrects per episode (default 3; --direct 6)")
    parser.add_argument("--save-dir", default="data/demo",
                        help="where runs are written (the loop: a loop-<time>/ folder in it; --direct: episodes)")
    parser.add_argument("--run-dir", default=None,
                        help="the loop's own folder instead of SAVE_DIR/loop-<time> (must not hold a run already)")
    parser.add_argument("--domain", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: a free one, claimed for this run)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--quiet", action="store_true", help="do not echo the nodes' logs")


def run(args: argparse.Namespace) -> int:
    if not (args.stack or args.direct):
        return run_learning(args)
    if args.epochs is None:
        args.epochs = 2
    defaults = DIRECT_DEFAULTS if args.direct else LOOP_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.episodes < 1 or args.epochs < 1 or args.policy_seconds <= 0 or args.human_seconds <= 0:
        print("h1-training demo: --epochs and --episodes must be >= 1, the seconds > 0", file=sys.stderr)
        return 2
    return run_direct(args) if args.direct else run_loop(args)


# --- the learning demo (default) ---------------------------------------------------------------------------------
def run_learning(args: argparse.Namespace) -> int:
    import signal

    from h1_training.workflow.sim_learning import LearningConfig, run_learning_demo

    # flags left out take LearningConfig's defaults (the one place they are set; --help repeats them)
    overrides = {name: getattr(args, name) for name in LEARNING_FLAGS if getattr(args, name) is not None}
    if args.image_size is not None:
        overrides["image_wh"] = args.image_size
    try:
        cfg = LearningConfig(seed=args.seed, **overrides)
    except ValueError as exc:
        print(f"h1-training demo: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir or Path(args.save_dir) / time.strftime("learn-%Y%m%d-%H%M%S")).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        print(f"h1-training demo: {run_dir} is not empty (pick another --run-dir)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(f"[demo {time.monotonic() - t0:6.1f}s] {text}", file=out, flush=True)

    stopping = {"flag": False}

    def on_sigint(_signum, _frame) -> None:  # first Ctrl+C: stop at the next step and save; second: hard
        if stopping["flag"]:
            raise KeyboardInterrupt
        stopping["flag"] = True
        say("Ctrl+C: finishing the current step, then saving and stopping (Ctrl+C again to abort)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    say(f"run folder {run_dir} (seed {cfg.seed}); robot-side data in {run_dir / 'robot'}")
    # --json: stdout carries the one JSON document; what libraries print meanwhile (LeRobot's "Loading weights
    # from local directory") goes to stderr with the progress lines
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with quiet_stdout:
            run = run_learning_demo(cfg, run_dir, say, stop=lambda: stopping["flag"], domain=args.domain,
                                    echo=sys.stderr if args.verbose else None, ab=not args.no_ab,
                                    on_server=None if args.no_view else
                                    lambda group, port, r: start_operator_view(group, port, r, say))
    finally:
        signal.signal(signal.SIGINT, previous)
    summary = run.summary()
    problems = list(run.problems)
    rows = run.rows
    inspected = _inspect_all(run.robot_dir, run.gpu_dir)
    summary["inspect"] = inspected
    problems += inspected["problems"]
    if rows:
        say("epoch  episodes  success (95% Wilson)        interv.  human fr.  t_success  train loss  train s")
        for r in rows:
            say(f"{r.epoch:5d}  {r.episodes:8d}  {r.successes:2d}/{r.trials:<2d} {r.success_rate:4.0%} "
                f"[{r.ci_low:4.0%}, {r.ci_high:4.0%}]     {r.intervention_rate:5.0%}  {r.human_frames:9d}  "
                f"{'-' if r.mean_time_to_success_s is None else f'{r.mean_time_to_success_s:.2f} s':>9}  "
                f"{'-' if r.train_loss is None else f'{r.train_loss:.4f}':>10}  "
                f"{'-' if r.train_s is None else f'{r.train_s:.0f}':>7}")
    if run.ab:
        say(f"A/B (model_comparison, {run.ab['test']}): p = {run.ab['p_value']:.3g}, winner: {run.ab['winner']} "
            f"({run.ab['trials']} trials)")
    if run.plot:
        say(f"learning curve: {run.plot}")
    say(f"{inspected['episodes']} episodes recorded, {inspected['valid']} pass h1-training inspect, "
        f"{inspected['synced_identical']} synced copies identical; summary {run.run_dir / 'summary.json'}; "
        f"{run.seconds:.0f} s")
    summary["problems"] = problems
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.json:
        print(json.dumps(summary, indent=2, default=str), flush=True)
    if run.interrupted:
        return 130
    if problems:
        say("FAILED: " + "; ".join(problems))
        return 1
    return 0


VIEW_PROFILE = "operator_view"
GATEWAY_PORT = 8765  # Foxglove's default; another free port when taken (the URL printed is the one to open)


def start_operator_view(group, server_port: int, run, say) -> None:
    """The operator's view of the learning loop (bring-up profile ``operator_view``) in the demo's process group:
    the workflow manager following the server's own epoch-watcher jobs (auto-train off: the server is in charge),
    the dataset manager over the recorded episodes (browse, play back), model_comparison (the final A/B shows in
    its panel), the Foxglove gateway and the web app, on 8765 / 8080 unless taken. Prints where to connect."""
    from h1_training.bringup import load_profile, plan_ports, start_profile

    profile = load_profile(VIEW_PROFILE)
    # the profile's policy server port (8000) is this run's server; nothing else moves off its file's port
    ports = plan_ports(profile, environ={"H1_PORT_8000": str(server_port)})
    robot, view = run.robot_dir, run.run_dir / "operator_view"
    view.mkdir(parents=True, exist_ok=True)
    start_profile(group, profile, ports=ports, extra={
        "training_workflow_manager": ["-p", f"workflow.data_dir:={robot}", "-p", "workflow.auto_train_enabled:=false",
                                      "-p", f"workflow.state_file:={view / 'workflow_state.json'}"],
        "dataset_manager": ["-p", f"roots:=['{robot}']", "-p", f"export_dir:={view / 'exports'}",
                            "-p", f"index_file:={view / 'catalog_index.sqlite3'}"],
        "model_comparison": ["-p", f"seed:={run.cfg.seed}"],
        "foxglove_gateway": ["-p", f"port:={port_or_free(GATEWAY_PORT)}"],
        "training_web_app": ["-p", f"port:={port_or_free(WEB_PORT)}", "-p", f"data_roots:=['{run.run_dir}']"],
    })
    for line in view_lines(group):
        say(line)


def foxglove_line(group, name: str = GATEWAY_EXE) -> str:
    """Where Foxglove connects (the gateway's own "listening on" line) and where the extension and layouts are."""
    line = group.wait_for_line(name, lambda s: "listening on ws://" in s, timeout=60)
    root = Path(__file__).resolve().parents[3]
    return (f"Foxglove: open connection {line.rsplit(' ', 1)[1]} (Foxglove WebSocket); extension "
            f"{root / 'foxglove_panels/dist/h1-training-panels.foxe'}; layouts {root / 'foxglove_configs'}")


def web_line(group, name: str = WEB_EXE) -> str:
    line = group.wait_for_line(name, lambda s: "listening on http://" in s, timeout=60)
    return f"web training interface: {line.split('listening on ', 1)[1].strip()}"


def view_lines(group) -> list[str]:
    return [foxglove_line(group), web_line(group)]


def _inspect_all(robot_dir: Path, gpu_dir: Path) -> dict[str, Any]:
    """Every recorded episode through ``h1-training inspect``'s checks, and its synced copy compared byte for byte."""
    from h1_training.recording.inspect import inspect_path

    episodes = valid = same = 0
    problems = []
    for folder in sorted(robot_dir.glob("training_session_epoch*")):
        for ep in inspect_path(folder).episodes:
            episodes += 1
            if ep.valid:
                valid += 1
            else:
                problems.append(f"{ep.path}: {'; '.join(ep.problems)}")
            copy = gpu_dir / folder.name / Path(ep.path).name
            if copy.is_file() and copy.read_bytes() == Path(ep.path).read_bytes():
                same += 1
            else:
                problems.append(f"{ep.path}: the synced copy {copy} is missing or differs")
    return {"episodes": episodes, "valid": valid, "synced_identical": same, "problems": problems}


# --- --stack: the ROS plumbing check (the full loop) ------------------------------------------------------------
def port_or_free(port: int) -> int:
    """``port`` when nothing listens on 127.0.0.1:port, else a free one (the web page's well-known 8080)."""
    from h1_training.bringup import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def seed_weak_policy(models_dir: Path) -> str:
    """Register and deploy the loop's first policy: the scripted reach toward POLICY_MISS_RAD (short of the target
    and off to the side, as a weak policy reaches). The server serves it as epoch 1 (its registry generation)."""
    from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
    from h1_training.sim.operator_script import POLICY_MISS_RAD
    from h1_training.training.registry import ModelRegistry

    registry = ModelRegistry(models_dir)
    staged = registry.staging_dir()
    ScriptedPolicy(ScriptedConfig(mode="reach", target=[float(x) for x in POLICY_MISS_RAD])).save(staged)
    info = registry.commit(staged, "scripted", dataset={"sources": [], "note": "h1-training demo: the weak start"},
                           config={"mode": "reach", "fit": "none: POLICY_MISS_RAD"})
    registry.deploy(info.id)
    return info.id


def episode_distance(path: Path) -> dict[str, Any]:
    """How far the policy's reach ended from the operator's corrected pose, in one episode: the arm pose at the last
    policy frame vs the last frame (the operator's hand held the arms at the corrected pose until the save)."""
    import numpy as np

    from h1_training.recording.reader import load_episode

    ep = load_episode(path, with_images=False)
    phase = np.asarray(ep.phase)
    policy = np.flatnonzero(phase == "policy")
    models = sorted({m for m, p in zip(ep.model_version or [], ep.phase) if p == "policy" and m})
    if policy.size == 0 or ep.length == 0 or phase[-1] != "human":
        return {"distance_rad": None, "models": models}
    gap = np.abs(ep.qpos[policy[-1]].astype(np.float64) - ep.qpos[-1].astype(np.float64))
    return {"distance_rad": round(float(gap.max()), 4), "distance_l2_rad": round(float(np.linalg.norm(gap)), 4),
            "models": models}


def loop_summary(robot_dir: Path, gpu_dir: Path, models_dir: Path) -> dict[str, Any]:
    """What the loop did, from its files: per epoch the episodes (validated), the synced files, the policy that
    drove, the model trained on the epoch and the epoch it was served as, and the reach-to-correction distance."""
    from h1_training.recording.inspect import inspect_path
    from h1_training.recording.layout import EPISODE_GLOB, SYNC_MARKER, session_dir, session_epoch_of
    from h1_training.serve.model_pool import STATE_FILE
    from h1_training.training.registry import ModelRegistry

    state_path = models_dir / STATE_FILE
    history = json.loads(state_path.read_text()).get("history", []) if state_path.is_file() else []
    served = {h["model_id"]: h for h in history}
    trained = {}
    for info in ModelRegistry(models_dir).list():
        data_epoch = info.dataset.get("data_epoch")
        if data_epoch is not None:
            trained[int(data_epoch)] = info
    epochs = []
    folders = {e: f for f in robot_dir.iterdir() if (e := session_epoch_of(f)) is not None and f.is_dir()}
    for epoch, folder in sorted(folders.items()):
        report = inspect_path(folder)
        episodes = []
        for ep in report.episodes:
            row = {"path": ep.path, "valid": ep.valid, "problems": ep.problems, "frames": ep.frames,
                   "policy_frames": ep.policy_frames, "human_frames": ep.human_frames, "success": ep.success,
                   "duration_s": round(ep.duration_s, 2), "rate_hz": ep.achieved_rate_hz,
                   "missed_ticks": ep.missed_ticks}
            if ep.valid:
                row.update(episode_distance(Path(ep.path)))
            episodes.append(row)
        remote = session_dir(gpu_dir, epoch)
        synced = sorted(p.name for p in remote.iterdir() if p.is_file()) if remote.is_dir() else []
        same = [f.name for f in sorted(folder.glob(EPISODE_GLOB))
                if (remote / f.name).is_file() and (remote / f.name).read_bytes() == f.read_bytes()]
        model = trained.get(epoch)
        swap = served.get(model.id) if model is not None else None
        marker = remote / SYNC_MARKER
        dists = [e["distance_rad"] for e in episodes if e.get("distance_rad") is not None]
        epochs.append({
            "epoch": epoch, "episodes": episodes, "synced_files": synced, "synced_identical": same,
            "policy_models": sorted({m for e in episodes for m in e.get("models", [])}),
            "distance_rad": round(sum(dists) / len(dists), 4) if dists else None,
            "trained_model": model.id if model else None,
            "trained_on_episodes": model.metrics.get("episodes") if model else None,
            "served_epoch": swap["epoch"] if swap else None,
            "retrain_s": round(swap["time"] - marker.stat().st_mtime, 1) if swap and marker.is_file() else None,
        })
    return {"epochs": epochs, "server_history": history}


def print_summary(summary: dict[str, Any]) -> None:
    print("[demo] ---------------------------------------- summary ----------------------------------------")
    for e in summary["epochs"]:
        eps = e["episodes"]
        pf, hf = sum(x["policy_frames"] for x in eps), sum(x["human_frames"] for x in eps)
        labels = ", ".join({1: "reached", 0: "missed"}.get(x["success"], "unlabelled") for x in eps)
        print(f"[demo] epoch {e['epoch']}: policy {', '.join(e['policy_models']) or '?'}")
        print(f"[demo]   {len(eps)} episode(s), {pf + hf} frames (policy {pf} / human {hf}); operator said: {labels}")
        for x in eps:
            state = "ok" if x["valid"] else "INVALID: " + "; ".join(x["problems"])
            dist = x.get("distance_rad")
            print(f"[demo]     {x['path']}: {state}, {x['frames']} frames, {x['duration_s']} s at "
                  f"{x['rate_hz'] or 0:.1f} Hz" + ("" if dist is None else f", reach ended {dist:.3f} rad from the "
                                                                        f"corrected pose"))
        print(f"[demo]   synced to the GPU server: {', '.join(e['synced_files']) or 'nothing'}"
              f" ({len(e['synced_identical'])} episode file(s) byte-identical)")
        if e["trained_model"]:
            after = f", {e['retrain_s']} s after the sync" if e["retrain_s"] is not None else ""
            print(f"[demo]   retrained: {e['trained_model']} on {e['trained_on_episodes']} episode(s), served as "
                  f"epoch {e['served_epoch']}{after}")
        else:
            print("[demo]   retrained: no model was trained on this epoch")
    dists = [(e["epoch"], e["distance_rad"]) for e in summary["epochs"] if e["distance_rad"] is not None]
    if len(dists) >= 2:
        print("[demo] improvement: where the policy's reach ended vs the operator's corrected pose (max joint "
              "error): " + " -> ".join(f"epoch {ep} {d:.3f} rad" for ep, d in dists))


def check_loop(summary: dict[str, Any], epochs: int, episodes: int, start_epoch: int,
               server_epoch: int | None) -> list[str]:
    """Why the loop did not complete (empty: it did)."""
    from h1_training.recording.layout import SYNC_MARKER

    problems = []
    done = summary["epochs"]
    if len(done) < epochs:
        problems.append(f"{len(done)} of {epochs} epoch(s) recorded")
    for e in done:
        eps = e["episodes"]
        bad = [x["path"] for x in eps if not x["valid"]]
        if bad:
            problems.append(f"epoch {e['epoch']}: invalid episode(s) {bad}")
        if len(eps) != episodes:
            problems.append(f"epoch {e['epoch']}: {len(eps)} episode(s), expected {episodes}")
        if len(e["synced_identical"]) != len(eps) or SYNC_MARKER not in e["synced_files"]:
            problems.append(f"epoch {e['epoch']}: not fully synced ({e['synced_files']})")
        if e["trained_model"] is None or e["served_epoch"] is None:
            problems.append(f"epoch {e['epoch']}: the server did not retrain and serve a model on it")
    if server_epoch is None or server_epoch < start_epoch + epochs:
        problems.append(f"the server's epoch went {start_epoch} -> {server_epoch}, expected {start_epoch + epochs}")
    dists = [e["distance_rad"] for e in done if e["distance_rad"] is not None]
    if len(dists) == len(done) >= 2 and not dists[-1] < dists[0]:
        problems.append(f"the policy did not improve: its reach ended {dists[0]:.3f} rad from the correction in "
                        f"epoch {done[0]['epoch']}, {dists[-1]:.3f} rad in epoch {done[-1]['epoch']}")
    return problems


def run_loop(args: argparse.Namespace) -> int:
    from h1_training.bringup import load_profile, plan_ports
    from h1_training.policy.client import PolicyClientError, get_training_status
    from h1_training.procs import ProcessGroup, claim_ros_domain, loopback_ros_env, resolve_executable

    t_start = time.monotonic()
    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    run_dir = Path(args.run_dir or Path(args.save_dir) / time.strftime("loop-%Y%m%d-%H%M%S")).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        print(f"h1-training demo: {run_dir} is not empty (pick another --run-dir)", file=sys.stderr)
        return 2
    robot_dir, gpu_dir, models_dir = run_dir / "robot", run_dir / "gpu_server/data", run_dir / "gpu_server/models"
    for d in (robot_dir, gpu_dir, models_dir):
        d.mkdir(parents=True, exist_ok=True)
    first_model = seed_weak_policy(models_dir)
    env = loopback_ros_env(domain)
    profile = load_profile(PROFILE)
    ports = plan_ports(profile)  # free loopback ports: runs beside another stack (`up sim`, a test, a bench)
    group = ProcessGroup(env=env, echo=None if args.quiet else sys.stdout)
    print(f"[demo] ROS_DOMAIN_ID={domain}, loopback only; run folder {run_dir}", flush=True)
    print(f"[demo]   robot side (recorder save_dir): {robot_dir}\n[demo]   GPU server folder (rsync target, "
          f"--data-dir): {gpu_dir}\n[demo]   models: {models_dir}; first policy {first_model} (a weak reach)",
          flush=True)
    print(f"[demo] {args.epochs} epoch(s) x {args.episodes} episode(s): {args.policy_seconds:g} s policy, "
          f"{args.human_seconds:g} s correction each", flush=True)
    failure = ""
    port: int | None = None
    start_epoch: int | None = None
    server_epoch: int | None = None
    operator = None
    try:
        for node in profile.nodes:
            tail = ports.argv_tail(node)  # the server's --port and the session's policy_port moved together
            if node.executable == SERVER_EXE:
                tail += ["--models-dir", str(models_dir), "--data-dir", str(gpu_dir)]
            elif node.executable == SESSION_EXE:
                tail += ["-p", f"save_dir:={robot_dir}", "-p", f"rsync_target:={gpu_dir}/"]
            elif node.executable == RECORDER_EXE:
                tail += ["-p", f"save_dir:={robot_dir}"]
            elif node.executable == WEB_EXE:
                tail += ["-p", f"port:={port_or_free(WEB_PORT)}", "-p", f"data_roots:=['{run_dir}']"]
            group.start(node.name, resolve_executable(node.executable) + tail, extra_env=node.env or None)
            if node.executable == GATEWAY_EXE:
                print_foxglove(group, node.name)
            if node.executable == WEB_EXE:
                print(f"[demo] {web_line(group, node.name)}", flush=True)
            if node.executable == SERVER_EXE:
                line = group.wait_for_line(node.name, lambda s: "listening on ws://" in s, timeout=60)
                port = int(line.rsplit(":", 1)[1])
                print(f"[demo] GPU server on 127.0.0.1:{port}", flush=True)
        if port is None:
            raise RuntimeError(f"profile {PROFILE} starts no policy server")
        operator = group.start("sim_operator", resolve_executable("sim_operator") + [
            "--ros-args", "-p", "mode:=session", "-p", f"epochs:={args.epochs}", "-p", f"episodes:={args.episodes}",
            "-p", f"policy_seconds:={float(args.policy_seconds)}", "-p", f"human_seconds:={float(args.human_seconds)}"])
        deadline = t_start + args.timeout
        last_seen: tuple | None = None
        next_poll = 0.0

        def poll_server(now: float) -> None:
            nonlocal start_epoch, server_epoch, last_seen
            try:
                st = get_training_status("127.0.0.1", port, timeout=2.0)
            except PolicyClientError:
                return
            if start_epoch is None:
                start_epoch = int(st["epoch"])
            server_epoch = int(st["epoch"])
            seen = (st["epoch"], st["model_id"], st["ready"], st["training"])
            if seen != last_seen:
                last_seen = seen
                what = "training" if st["training"] else ("ready" if st["ready"] else "job queued")
                print(f"[demo] GPU server: epoch {st['epoch']}, model {st['model_id']} ({what}) at "
                      f"{now - t_start:.1f} s", flush=True)

        while operator.running:
            now = time.monotonic()
            if now > deadline:
                failure = f"the loop did not finish in {args.timeout:.0f} s"
                break
            dead = [c for c in group.exited() if c is not operator
                    and not (c.name == SESSION_EXE and c.proc.returncode == 0)]
            if dead:
                failure = f"{dead[0].name} exited with code {dead[0].proc.returncode}"
                break
            if now >= next_poll:
                next_poll = now + 0.5
                poll_server(now)
            time.sleep(0.1)
        poll_server(time.monotonic())  # the last swap may have come after the last poll
        if not failure and operator.proc.returncode == 0:
            # the operator's Ctrl+C: hil_session saves, says STOPPED and exits by itself
            session = next((c for c in group.children if c.name == SESSION_EXE), None)
            if session is not None:
                try:
                    session.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    failure = "hil_session did not exit after the operator's Ctrl+C"
        if not failure and operator.proc.returncode != 0:
            reason = next((line.split("FAILED: ", 1)[1] for line in reversed(operator.lines) if "FAILED: " in line),
                          operator.lines[-1] if operator.lines else "no output")
            failure = f"the operator failed (exit {operator.proc.returncode}): {reason}"
    except (RuntimeError, TimeoutError) as exc:
        failure = str(exc).splitlines()[0]
    finally:
        print("[demo] stopping everything in reverse start order", flush=True)
        codes = group.stop()
    bad_exit = {n: c for n, c in codes.items() if c not in (0, None) and n != "sim_operator"}
    elapsed = time.monotonic() - t_start
    summary = loop_summary(robot_dir, gpu_dir, models_dir)
    summary.update(run_dir=str(run_dir), domain=domain, seconds=round(elapsed, 1), first_model=first_model,
                   start_epoch=start_epoch, server_epoch=server_epoch, exit_codes=codes,
                   settings={"epochs": args.epochs, "episodes": args.episodes,
                             "policy_seconds": args.policy_seconds, "human_seconds": args.human_seconds})
    print_summary(summary)
    problems = ([failure] if failure else []) + check_loop(summary, args.epochs, args.episodes,
                                                           start_epoch if start_epoch is not None else 1,
                                                           server_epoch)
    if bad_exit and not failure:
        problems.append(f"processes exited with errors when stopped: {bad_exit}")
    summary["problems"] = problems
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if problems:
        print(f"[demo] FAILED after {elapsed:.0f} s: " + "; ".join(problems), flush=True)
        print(f"[demo] details: {run_dir / 'summary.json'}", flush=True)
        return 1
    print(f"[demo] done in {elapsed:.0f} s: {args.epochs} epoch(s), server epoch {start_epoch} -> {server_epoch}, "
          f"all episodes valid. Look inside: h1-training inspect {robot_dir}; {run_dir / 'summary.json'}",
          flush=True)
    return 0


def print_foxglove(group, name: str) -> None:
    print(f"[demo] {foxglove_line(group, name)}", flush=True)


# --- --direct: the sim profile and the single-process scripted operator ------------------------------------------
def run_direct(args: argparse.Namespace) -> int:
    from h1_training.bringup import load_profile, plan_ports
    from h1_training.procs import ProcessGroup, claim_ros_domain, loopback_ros_env, resolve_executable
    from h1_training.recording.inspect import inspect_path
    from h1_training.recording.layout import EPISODE_GLOB

    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    save_dir = Path(args.save_dir).resolve()
    save_dir.mkdir(parents=True, exist_ok=True)
    before = set(save_dir.rglob(EPISODE_GLOB))
    env = loopback_ros_env(domain)
    profile = load_profile("sim")
    ports = plan_ports(profile)
    group = ProcessGroup(env=env, echo=None if args.quiet else sys.stdout)
    print(f"[demo] ROS_DOMAIN_ID={domain}, loopback only; episodes go to {save_dir}", flush=True)
    code = 1
    try:
        for node in profile.nodes:
            tail = ports.argv_tail(node)
            if node.executable == RECORDER_EXE:
                tail += ["-p", f"save_dir:={save_dir}"]
            group.start(node.name, resolve_executable(node.executable) + tail, extra_env=node.env or None)
            if node.executable == GATEWAY_EXE:
                print_foxglove(group, node.name)
        operator = group.start(
            "sim_operator",
            resolve_executable("sim_operator")
            + ["--ros-args", "-p", f"episodes:={args.episodes}", "-p", f"policy_seconds:={float(args.policy_seconds)}",
               "-p", f"human_seconds:={float(args.human_seconds)}"],
        )
        deadline = time.monotonic() + args.timeout
        while operator.running and time.monotonic() < deadline:
            dead = [c for c in group.exited() if c is not operator]
            if dead:
                print(f"[demo] {dead[0].name} exited with code {dead[0].proc.returncode}; aborting", flush=True)
                break
            time.sleep(0.2)
        if operator.running:
            print("[demo] the session did not finish in time; aborting", flush=True)
        else:
            code = operator.proc.returncode
    finally:
        group.stop()
    new_files = sorted(set(save_dir.rglob(EPISODE_GLOB)) - before)
    print(f"[demo] {len(new_files)} new episode(s):", flush=True)
    valid = 0
    for path in new_files:
        for ep in inspect_path(path).episodes:
            if ep.valid:
                valid += 1
                print(f"  ok {ep.path}\n     {ep.frames} frames, {ep.duration_s:.1f} s at "
                      f"{ep.achieved_rate_hz or 0:.2f} Hz, missed ticks {ep.missed_ticks}, "
                      f"policy {ep.policy_frames} / human {ep.human_frames} frames, success label {ep.success}")
                for warning in ep.warnings:
                    print(f"     warning: {warning}")
            else:
                print(f"  INVALID {ep.path}: {'; '.join(ep.problems)}")
    if code == 0 and valid == len(new_files) == args.episodes:
        print(f"[demo] done: {valid} episodes recorded and valid. Look inside: h1-training inspect {save_dir}",
              flush=True)
        return 0
    print(f"[demo] FAILED (operator exit {code}, {valid}/{args.episodes} valid episodes)", flush=True)
    return 1
