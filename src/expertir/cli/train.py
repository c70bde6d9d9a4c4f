"""``expertir train``: train a model from a YAML config.

One process on CPU or one GPU; several GPUs or nodes through ``torchrun``, e.g.
``torchrun --nproc_per_node=4 -m expertir.cli.main train --config configs/aio3/sler_ir_base.yaml``.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model from a YAML config",
        description="Train a model from a YAML config; KEY=VALUE arguments override config keys "
                    "(dotted, e.g. train.lr=1e-4 train.steps=2000 model.options.num_experts=8). "
                    "Multi-GPU / multi-node: launch the same command with torchrun.",
        epilog="example: expertir train --config configs/tiny/sler_ir.yaml train.steps=300 data.root=DATA")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", help="run folder (default: OUT_DIR/NAME from the config)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue exactly from the run folder's last.pt (or the given file)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from expertir.training import load_config, train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    if cfg["name"] == "run":
        cfg["name"] = Path(args.config).stem
    train(cfg, resume=args.resume, run_dir=args.out)
    return 0
