"""Training throughput: images/s of the whole ``expertir train`` step, variants side by side.

A *variant* is one ``expertir train`` process: a source tree (``src=DIR``, default this
checkout's ``src``), environment variables (``env.NAME=VALUE``) and config overrides
(``KEY=VALUE``) on top of the recipe (``configs/shipped/<model>.yaml``), written
``NAME[:SETTING[:SETTING...]]``. For each model, every variant is started and runs its
warm-up steps; then the variants take turns — ``--turn`` steps of A, then of B, … —
for ``--rounds`` rounds, so that a shared, noisy machine slows all of them alike. The
table gives the median time of the timed steps (the first step of each turn is left out)
and ``batch / median`` images/s, with the ratio to the first variant.

What is timed is the real training loop of each source tree (data, forward, backward,
clipping, optimizer, EMA, logging, checkpoints when they fall due): every version of the
trainer advances its progress bar once per optimizer step, so the worker process puts a
bar there that records the time and, after each turn, waits for its next one.

``--busy CMD`` measures a shared machine: each variant gets its own copy of CMD (started
with the variant's source tree and environment, so a policy under test applies to both
processes; ``$PYTHON`` is this Python), which runs only during that variant's *busy* turns
(SIGSTOP/SIGCONT); every
variant alternates idle and busy turns, and the table adds the busy images/s and its
share of the idle ones.

Examples (from the repository root; 2 threads per process as on the 2-core machine)::

    python benchmarks/train_speed.py --data-root DATA --models sler_ir_tiny cea_tiny restormer_tiny \\
        --variant main:src=../main/src --variant branch
    python benchmarks/train_speed.py --data-root DATA --models sler_ir_tiny --variant w0:data.workers=0 \\
        --variant w1:data.workers=1 --variant cl:train.channels_last=true
    python benchmarks/train_speed.py --data-root DATA --models restormer_tiny --variant spin:env.OMP_WAIT_POLICY=ACTIVE \\
        --variant passive:env.OMP_WAIT_POLICY=PASSIVE \\
        --busy 'while :; do "$PYTHON" -m expertir.cli.main restore src/expertir/samples/input -o /tmp/r --model sler_ir_tiny; done'
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "@@train_speed "


# --------------------------------------------------------------------------- worker side
def worker(argv: list[str]) -> int:
    """Run ``expertir train`` (of the source tree on ``PYTHONPATH``) with a pacing progress
    bar: report step times after the warm-up and after every turn, wait for "go"."""
    warmup, turn = int(argv[0]), int(argv[1])
    import expertir.cli.main as cli  # first: the CLI entry sets its thread defaults before torch loads
    import expertir.training.trainer as trainer

    class PacedBar(trainer.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.times: list[float] = []
            self.count = 0
            self._wait()

        def _wait(self) -> None:
            line = sys.stdin.readline().strip()
            if line != "go":
                raise SystemExit(0)
            self.last = time.perf_counter()

        def update(self, n=1):
            out = super().update(n)
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now
            self.count += 1
            if self.count == warmup or (self.count > warmup and (self.count - warmup) % turn == 0):
                print(MARK + json.dumps(self.times), flush=True)
                self.times = []
                self._wait()
            return out

    trainer.tqdm = PacedBar
    try:
        return cli.main(["train", *argv[2:]])
    except SystemExit as done:
        return int(done.code or 0)


# --------------------------------------------------------------------------- controller side
@dataclass
class Variant:
    name: str
    src: Path
    env: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, *settings = text.split(":")
        variant = cls(name, ROOT / "src")
        for setting in settings:
            key, sep, value = setting.partition("=")
            if not sep:
                sys.exit(f"train_speed: variant {text!r}: write NAME:KEY=VALUE[:KEY=VALUE...]")
            if key == "src":
                variant.src = Path(value).resolve()
                if not (variant.src / "expertir").is_dir():
                    sys.exit(f"train_speed: variant {name}: {variant.src} holds no expertir package")
            elif key.startswith("env."):
                variant.env[key[4:]] = value
            else:
                variant.overrides.append(setting)
        return variant

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src), "PYTHONUNBUFFERED": "1", **self.env}


class Worker:
    """One variant's training process, driven turn by turn."""

    def __init__(self, variant: Variant, config: Path, args, run_dir: Path, log: Path):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(args.warmup), str(args.turn),
               "--config", str(config), f"data.root={args.data_root}", *args.set, *variant.overrides,
               "--out", str(run_dir)]
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=variant.environment(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run_turn(self) -> list[float]:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            self.log.write(line)
        self.log.flush()
        sys.exit(f"train_speed: a training process ended early; see {self.log.name}")

    def stop(self) -> None:
        with_timeout = [self.proc.stdin.close, lambda: self.proc.wait(timeout=60)]
        for action in with_timeout:
            try:
                action()
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


class Load:
    """A background command (its own process group) that runs only while resumed."""

    def __init__(self, command: str, variant: Variant, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT,
                                     env={**variant.environment(), "PYTHON": sys.executable},
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(1.0)
        self.pause()

    def _signal(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            sys.exit(f"train_speed: the --busy command ended; see {self.log.name}")

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self, settle: float) -> None:
        self._signal(signal.SIGCONT)
        time.sleep(settle)

    def stop(self) -> None:
        self._signal(signal.SIGCONT)
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait()
        self.log.close()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def summary(times: list[float], batch: int) -> dict:
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [median] * 3
    return {"steps": len(times), "median_ms": median * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3,
            "images_per_s": batch / median}


def measure_model(model: str, batch: int, variants: list[Variant], args, tmp: Path, out: Path) -> dict:
    config = Path(args.config_dir) / f"{model}.yaml"
    if not config.is_file():
        sys.exit(f"train_speed: no config {config}")
    phases = ["idle", "busy"] if args.busy else ["idle"]
    workers = {v.name: Worker(v, config, args, tmp / f"{model}-{v.name}", out / f"{model}-{v.name}.log")
               for v in variants}
    loads = {v.name: Load(args.busy, v, out / f"{model}-{v.name}.busy.log") for v in variants} if args.busy else {}
    times = {(v.name, phase): [] for v in variants for phase in phases}
    try:
        for name, w in workers.items():
            print(f"  {model} {name}: warm-up ({args.warmup} steps)", flush=True)
            w.run_turn()
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                for phase in phases if r % 2 == 0 else phases[::-1]:
                    if phase == "busy":
                        loads[v.name].resume(args.settle)
                    turn = workers[v.name].run_turn()
                    if phase == "busy":
                        loads[v.name].pause()
                    times[(v.name, phase)] += turn[1:]  # the first step of a turn waited for it
            print(f"  {model}: round {r + 1}/{args.rounds} done (load average {loadavg()})", flush=True)
    finally:
        for w in workers.values():
            w.stop()
        for load in loads.values():
            load.stop()
    return {v.name: {phase: summary(times[(v.name, phase)], batch) for phase in phases} for v in variants}


def markdown(results: dict, variants: list[Variant], args, setting: str, loads: tuple[str, str]) -> str:
    busy = bool(args.busy)
    head = ["model", "variant", "ms/step (median)", "images/s", f"× {variants[0].name}"]
    head += ["images/s, busy", "busy / idle"] if busy else []
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for model, per_variant in results.items():
        first = per_variant[variants[0].name]["idle"]["images_per_s"]
        for v in variants:
            idle = per_variant[v.name]["idle"]
            cells = [model, v.name, f"{idle['median_ms']:.0f}", f"{idle['images_per_s']:.1f}",
                     f"{idle['images_per_s'] / first:.2f}"]
            if busy:
                b = per_variant[v.name]["busy"]
                cells += [f"{b['images_per_s']:.1f}", f"{b['images_per_s'] / idle['images_per_s']:.0%}"]
            lines.append("| " + " | ".join(cells) + " |")
    described = "; ".join(f"`{v.name}`: " + (", ".join(
        ([f"src={os.path.relpath(v.src, ROOT)}"] if v.src != ROOT / "src" else [])
        + [f"{k}={val}" for k, val in v.env.items()] + v.overrides) or "this checkout, recipe as is")
        for v in variants)
    notes = [f"Recipe `{args.config_dir}/<model>.yaml`" + (f" with `{' '.join(args.set)}`" if args.set else "")
             + f"; variants: {described}.",
             f"{args.warmup} warm-up steps, then {args.rounds} rounds of {args.turn}-step turns per variant, "
             "interleaved; medians of the timed steps (first step of each turn left out).",
             f"Load average before / after: {loads[0]} / {loads[1]}."]
    if busy:
        notes.append(f"Busy turns: beside `{args.busy}` (one copy per variant, with its environment).")
    return "\n".join(lines) + "\n\n" + setting + "\n" + "\n".join(notes) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", nargs="+", default=["sler_ir_tiny", "cea_tiny", "restormer_tiny"])
    p.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE...]",
                   help="a variant (repeatable; default: this checkout as is)")
    p.add_argument("--config-dir", default="configs/shipped", help="where <model>.yaml recipes are")
    p.add_argument("--data-root", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--warmup", type=int, default=40, help="untimed steps before the turns (default 40)")
    p.add_argument("--turn", type=int, default=15, help="steps per turn (default 15)")
    p.add_argument("--rounds", type=int, default=6, help="turns per variant (default 6)")
    p.add_argument("--busy", metavar="CMD", help="shell command to run beside the busy turns")
    p.add_argument("--settle", type=float, default=2.0, help="seconds the --busy command runs before a busy turn")
    p.add_argument("--out", default="runs/bench", help="folder for train_speed.md/.json and logs")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("train_speed: terminated"))  # still clean up
    if args.warmup < 1 or args.turn < 2 or args.rounds < 1:
        sys.exit("train_speed: --warmup ≥ 1, --turn ≥ 2 and --rounds ≥ 1")
    variants = [Variant.parse(v) for v in args.variant] or [Variant("branch", ROOT / "src")]
    if len({v.name for v in variants}) != len(variants):
        sys.exit("train_speed: variant names must differ")
    args.data_root = str(Path(args.data_root).resolve())
    sys.path.insert(0, str(ROOT / "src"))
    from expertir.training.config import load_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before = loadavg()
    print(f"load average before: {before}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        for model in args.models:
            batch = int(load_config(Path(args.config_dir) / f"{model}.yaml", args.set)["train"]["batch_size"])
            results[model] = measure_model(model, batch, variants, args, Path(tmp), out)
    after = loadavg()
    setting = (f"Measured {time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores, "
               f"`python benchmarks/train_speed.py {' '.join(sys.argv[1:])}`.")
    table = markdown(results, variants, args, setting, (before, after))
    (out / "train_speed.md").write_text(table)
    (out / "train_speed.json").write_text(json.dumps({"results": results, "load_before": before, "load_after": after,
                                                      "argv": sys.argv[1:]}, indent=2) + "\n")
    print("\n" + table)
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


if __name__ == "__main__":
    sys.exit(main())
