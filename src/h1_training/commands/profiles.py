"""List the bring-up profiles in config/bringup and the processes each one starts."""

from __future__ import annotations

import argparse

HELP = "list bring-up profiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one profile in detail")


def run(args: argparse.Namespace) -> int:
    from h1_training.bringup import ProfileError, available_profiles, load_profile

    names = [args.name] if args.name else available_profiles()
    for name in names:
        try:
            profile = load_profile(name)
        except ProfileError as exc:
            print(f"error: {exc}")
            return 2
        print(f"{profile.name}: {profile.description}")
        for node in profile.nodes:
            params = ", ".join(p.name for p in node.params)
            print(f"  {node.name:<20} {node.executable} {' '.join(node.args)}" + (f"  [{params}]" if params else ""))
    return 0
