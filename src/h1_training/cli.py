"""The ``h1-training`` command. Each subcommand lives in ``h1_training/commands/<name>.py`` and exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run``.

Examples::

    h1-training up sim                 # start the simulated robot + drivers + recorder
    h1-training profiles               # list bring-up profiles
    h1-training --help
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; the order is the order in --help
COMMANDS = {
    "demo": "h1_training.commands.demo",
    "up": "h1_training.commands.up",
    "profiles": "h1_training.commands.profiles",
    "inspect": "h1_training.commands.inspect",
    "serve": "h1_training.commands.serve",
    "convert": "h1_training.commands.convert",
    "import-seed": "h1_training.commands.import_seed",
    "export-seed": "h1_training.commands.export_seed",
    "train": "h1_training.commands.train",
    "bench": "h1_training.commands.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h1-training",
        description="Human-in-the-loop training for the Unitree H1-2: bring-up, recording, serving, training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an extra not installed here, or a command not yet written
            if exc.name == module_name:
                continue
            p = sub.add_parser(name, help=f"(unavailable: {exc.name} not installed)")
            p.set_defaults(_unavailable=str(exc))
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        print(f"h1-training {args.command}: {args._unavailable}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
