"""The policy and training server (what the H1 seed runs as ``uv run scripts/serve_policy.py --port 8000``).

openpi-compatible WebSocket inference, ``GET /healthz``, ``GET /training_status`` and a JSON API to train, follow
jobs, list and deploy models — all on one port (see ``h1_training/serve/server.py`` for the protocol).

Examples::

    h1-training serve                                          # 127.0.0.1:8000, built-in scripted policy only
    h1-training serve --models-dir models --data-dir data/synced --auto-train --auto-policy act
    H1_POLICY_API_KEY=secret h1-training serve --host 0.0.0.0 --device cuda --models-dir /data/models \\
        --data-dir /data/h1_training                           # the GPU server, reachable by the robot laptop

    curl http://127.0.0.1:8000/training_status
    curl -X POST http://127.0.0.1:8000/train -d '{"policy_type": "act", "dataset": "training_session_epoch1"}'
    curl http://127.0.0.1:8000/jobs
    curl -X POST http://127.0.0.1:8000/models/<id>/deploy

A session picks a model with ``ws://HOST:PORT/?model=<id>``; without it, it follows the deployed default model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "run the policy + training server (WebSocket inference, /training_status, training jobs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it: set an API key then)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    parser.add_argument("--models-dir", help="model registry root (trained models, deployed pointer); "
                                             "without it only the built-in scripted policies are served")
    parser.add_argument("--data-dir", help="synced HDF5 data (training_session_epoch*/); training datasets "
                                           "must lie inside it")
    parser.add_argument("--work-dir", help="job folders and converted datasets (default MODELS_DIR/.work)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Api-Key KEY' (default: $H1_POLICY_API_KEY, else no check)")
    parser.add_argument("--device", default="auto", help="device for served models: auto, cpu, cuda, cuda:N")
    parser.add_argument("--default-model", help="serve this model id first instead of the deployed one")
    parser.add_argument("--max-loaded-models", type=int, default=4, help="models kept in memory at once")
    parser.add_argument("--diffusion-sampling", default=None, metavar="SAMPLER[:STEPS]",
                        help="sampler of every Diffusion model served: ddim:10 (10 DDIM steps, ~10x faster than "
                             "LeRobot's default) or ddpm[:STEPS]; default: each model's own (config.json)")
    parser.add_argument("--max-message-mb", type=float, default=32.0, help="largest WebSocket message accepted")
    parser.add_argument("--infer-delay-ms", type=float, default=0.0,
                        help="benchmarks and tests: every inference takes this many ms longer (a slow model, "
                             "e.g. `bench policy-loop`'s 100 ms one); default 0")
    from h1_training.training.autotrain import AutoTrainConfig

    d = AutoTrainConfig()  # the epoch watcher's defaults are the flags' defaults (declared once)
    auto = parser.add_argument_group("automatic training (--auto-train)")
    auto.add_argument("--auto-train", action="store_true",
                      help="train when a new training_session_epoch* folder in --data-dir is complete")
    auto.add_argument("--auto-policy", default=d.policy_type,
                      help=f"policy type for automatic jobs (default {d.policy_type})")
    auto.add_argument("--auto-steps", type=int, default=d.steps)
    auto.add_argument("--auto-batch-size", type=int, default=d.batch_size)
    auto.add_argument("--auto-lr", type=float, default=d.lr, help="learning rate (default: the policy's preset)")
    auto.add_argument("--auto-human-weight", type=float, default=d.human_weight,
                      help="sampling weight of human-correction frames (1 = no up-weighting)")
    auto.add_argument("--auto-pre-intervention-s", type=float, default=d.pre_intervention_s,
                      help="policy frames this long before a takeover get weight 0 (Sirius; "
                           f"default {d.pre_intervention_s:g})")
    auto.add_argument("--auto-action-lookahead", type=int, default=d.action_lookahead,
                      help="conversion: a human frame's action target is qpos this many frames later "
                           f"(default {d.action_lookahead})")
    auto.add_argument("--auto-quiet-s", type=float, default=d.quiet_s,
                      help="an epoch folder unchanged this long counts as synced (without SYNC_COMPLETE)")
    auto.add_argument("--auto-require-marker", action="store_true",
                      help="only a SYNC_COMPLETE file in the epoch folder marks it complete")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def run(args: argparse.Namespace) -> int:
    import asyncio
    import gc
    import logging
    import signal

    from h1_training.malloc_tuning import keep_message_buffers
    from h1_training.policy.train_request import resolve_device
    from h1_training.serve.server import PolicyServer, ServerConfig
    from h1_training.training.autotrain import AutoTrainConfig
    from h1_training.training.jobs import POLICY_TYPES

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    log = logging.getLogger("h1_training.serve")
    api_key = args.api_key if args.api_key is not None else (os.environ.get("H1_POLICY_API_KEY") or None)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("binding %s without an API key: anyone who can reach this port can run and replace models",
                    args.host)
    if args.auto_train and not (args.models_dir and args.data_dir):
        print("error: --auto-train needs --models-dir and --data-dir")
        return 2
    if args.auto_train and args.auto_policy not in POLICY_TYPES:
        print(f"error: --auto-policy must be one of {list(POLICY_TYPES)}")
        return 2
    try:
        if args.auto_train:  # the folder rsync fills; an empty one is a valid start (nothing to train yet)
            Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        auto = None
        if args.auto_train:
            auto = AutoTrainConfig(policy_type=args.auto_policy, steps=args.auto_steps,
                                   batch_size=args.auto_batch_size, lr=args.auto_lr,
                                   human_weight=args.auto_human_weight, quiet_s=args.auto_quiet_s,
                                   pre_intervention_s=args.auto_pre_intervention_s,
                                   action_lookahead=args.auto_action_lookahead,
                                   require_marker=args.auto_require_marker)
        config = ServerConfig(host=args.host, port=args.port, models_dir=args.models_dir, data_dir=args.data_dir,
                              work_dir=args.work_dir, api_key=api_key, device=resolve_device(args.device),
                              default_model=args.default_model, max_loaded_models=args.max_loaded_models,
                              max_message_bytes=int(args.max_message_mb * 1024 * 1024), auto_train=auto,
                              diffusion_sampling=args.diffusion_sampling, infer_delay_ms=args.infer_delay_ms)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    keep_message_buffers()  # this process is the server: no page faults on every message's buffers
    try:
        server = PolicyServer(config)
    except Exception as exc:  # the deployed model does not load: say so instead of serving something else
        log.exception("cannot start the policy server")
        print(f"error: cannot load the default model: {type(exc).__name__}: {exc}\n"
              "  (start with --default-model scripted, or deploy another model, to serve without it)")
        return 2

    # Everything imported and loaded so far (torch, the default model) lives as long as the process: out of the
    # collector's sight, so a full collection never walks it in the middle of a request, and the interpreter's
    # last collection at exit does not either (it took 5-10 s on a loaded 2-core machine, past a SIGINT's wait).
    gc.freeze()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_stop)
        task = asyncio.create_task(server.serve_forever())
        while server.port is None and not task.done():
            await asyncio.sleep(0.01)
        if server.port is not None:
            # One parseable line for scripts and tests that start the server with --port 0.
            print(f"h1-training serve: listening on ws://{config.host}:{server.port}", flush=True)
        await task

    try:
        asyncio.run(main())
    except OSError as exc:  # port in use, address not available
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}")
        return 1
    return 0
