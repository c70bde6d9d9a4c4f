"""``expertir serve``: a local web page to try the models in a browser."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  expertir serve                          # http://127.0.0.1:7860, the shipped default model
  expertir serve --model cea --port 8080
  expertir serve --weights runs/my_run/final.safetensors
  expertir serve --host 0.0.0.0           # reachable from other machines: mind who can

The page takes an uploaded or dropped image, restores it with the chosen shipped model
and shows: a before/after slider, the time it took, the model's blind degradation
estimate, its routing maps (the figure of 'expertir explain') and a download button for
the restored PNG. Needs the optional extra: pip install 'expertir[demo]'.

Safety defaults: only this machine can connect (127.0.0.1) unless --host says otherwise;
uploads over --max-upload bytes or --max-megapixels are refused; files are decoded by the
same reader as 'expertir restore' (a non-image, truncated file or decompression bomb gets
a clear message on the page); restorations run one at a time through a queue, each within
the memory budget of 'expertir restore' (--max-memory); nothing is fetched from the
internet."""


def add_parser(sub) -> None:
    from expertir.cli.restore import memory_arg
    from expertir.serve.restorer import DEFAULT_MAX_PIXELS

    p = sub.add_parser("serve", help="try the models in a browser (local web page)",
                       description="Serve a local web page that restores uploaded images and "
                                   "explains what the model saw.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="NAME",
                     help="the model selected on the page (default: the shipped default model); "
                          "every shipped model can be picked")
    src.add_argument("--weights", metavar="FILE",
                     help="also offer an expertir .safetensors checkpoint, selected by default")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload", type=memory_arg, default="20MB", metavar="SIZE",
                   help="largest upload accepted, e.g. 20MB (default 20MB)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                   help=f"largest image accepted, in megapixels (default {DEFAULT_MAX_PIXELS / 1e6:g})")
    p.add_argument("--max-memory", type=memory_arg, metavar="SIZE",
                   help="memory budget per restoration, e.g. 2GB (default: as 'expertir restore')")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def run(args) -> int:
    from expertir.errors import ExpertirError

    if args.max_megapixels <= 0:
        raise ExpertirError(f"--max-megapixels must be positive, got {args.max_megapixels:g}")
    if not 0 < args.port < 65536:
        raise ExpertirError(f"--port must be between 1 and 65535, got {args.port}")
    from expertir.serve import Restorer
    from expertir.serve.app import launch  # needs the 'demo' extra: a one-line error without it

    restorer = Restorer(args.model, args.weights, args.device, args.max_memory,
                        int(args.max_megapixels * 1e6))
    print(f"models: {', '.join(restorer.choices)} (default {restorer.default}) on {restorer.device}")
    try:
        app = launch(restorer, args.host, args.port, args.max_upload, block=False)
        url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        print(f"serving on {url}  (Ctrl+C stops)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"note: listening on {args.host}: other machines that can reach it can use the page")
        app.block_thread()
    finally:
        restorer.close()
    return 0
