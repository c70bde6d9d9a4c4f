"""``expertir models``: list the registered models and presets."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models and presets",
                       description="List every name that --model and build_model() accept.")
    p.set_defaults(func=run)


def run(args) -> int:
    from expertir.models import list_models

    for name in list_models():
        print(name)
    return 0
