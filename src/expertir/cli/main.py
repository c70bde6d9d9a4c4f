"""``expertir`` entry point.

Each command lives in its own module of this package and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser). User mistakes raise
:class:`~expertir.errors.ExpertirError` and are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from expertir import __version__
from expertir.errors import ExpertirError
from expertir.threads import set_openmp_defaults

set_openmp_defaults()  # before any command loads torch (see expertir.threads)

#: Command modules, in the order ``expertir --help`` lists them.
COMMANDS = ["restore", "explain", "demo", "serve", "eval", "train", "data", "bench", "export", "models"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expertir",
        description="All-in-one image restoration: one network restores noise, rain, haze, "
                    "blur and low light without being told which.",
        epilog="Run 'expertir COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"expertir {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"expertir.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExpertirError as exc:
        print(f"expertir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("expertir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
