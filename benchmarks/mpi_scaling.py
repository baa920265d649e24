"""Data-parallel scaling of ``seqtool train``: tokens/s at 1 and 2 MPI ranks (1 thread each) against
1 rank with 2 threads, the Allreduce time and bytes per step, and a ring-allreduce projection.

    python benchmarks/mpi_scaling.py [--steps 25] [--tasks charlm,sed]      # needs: pip install -e .[mpi]

Each configuration runs ``seqtool train TASK`` under ``mpiexec`` with a timing Trainer (this file,
``--worker``): the first 3 steps are left out (kernel compilation, first touches), validation is
not timed, tokens/s = global batch tokens / rank 0's step time. One JSON line per configuration
goes to stdout, then the projection table.

Projection (weak scaling: each rank keeps its slice, the global batch grows with N): a step costs
the measured 1-rank step time plus a ring Allreduce of the gradient buffer,
    t_ring(N) = 2 (N-1) * alpha + 2 (N-1)/N * bytes / bandwidth,
so speed-up(N) = N * t_step / (t_step + t_ring(N)). alpha: 50 us (10 Gbit/s Ethernet, TCP),
5 us (100 Gbit/s InfiniBand/RoCE). The compute is assumed to scale perfectly; the network is the
only loss modelled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "tiny-shakespeare.txt"
WARMUP = 3
NETWORKS = {"10 Gbit/s": (10e9 / 8, 50e-6), "100 Gbit/s": (100e9 / 8, 5e-6)}


def worker(argv: list[str]) -> None:
    """Runs inside mpiexec: seqtool train with step timing; rank 0 prints one JSON line."""
    import seqtool.training.trainer as train_mod
    from seqtool.cli.main import cli

    stats = {"times": [], "tokens": []}

    class Timed(train_mod.Trainer):
        def _train_step(self, batch):
            t0 = time.perf_counter()
            ok = super()._train_step(batch)
            stats["times"].append(time.perf_counter() - t0)
            stats["tokens"].append(self.task.batch_tokens(batch))
            stats["trainer"] = self
            return ok

    train_mod.Trainer = Timed
    try:
        cli(argv, standalone_mode=False)
    finally:
        tr = stats.get("trainer")
        if tr is not None and tr.world.is_root:
            t, n = stats["times"][WARMUP:], stats["tokens"][WARMUP:]
            rep = tr.replicas
            buffer = rep._buffer.nbytes if rep._buffer is not None else 4 * sum(p.size for p in tr.params)
            print(json.dumps({"ranks": tr.world.size, "step_s": sum(t) / len(t), "tokens_per_s": sum(n) / sum(t),
                              "allreduce_s_per_step": rep.reduce_seconds / max(rep.reduce_calls, 1),
                              "allreduce_bytes_per_step": buffer if tr.world.size > 1 else 0,
                              "gradient_bytes": 4 * sum(int(p.size) for p in tr.params)}), flush=True)


def sed_data(d: Path) -> list[str]:
    import numpy as np

    from click.testing import CliRunner

    from seqtool.data.audio import write_wav
    from seqtool.cli.main import cli

    sr, clips = 16000, d / "clips"
    clips.mkdir()
    for k, seconds in enumerate((0.4, 0.7, 1.0)):
        t = np.arange(int(seconds * sr)) / sr
        write_wav(clips / f"beep{k:03d}.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), sr)
        write_wav(clips / f"buzz{k:03d}.wav", (0.3 * np.sign(np.sin(2 * np.pi * 200 * t))).astype(np.float32), sr)
    r = CliRunner().invoke(cli, ["synth-scenes", str(clips), "-o", str(d / "scenes"), "-n", "24",
                                 "--duration", "10", "--seed", "1", "-q"])
    assert r.exit_code == 0, r.output
    return [str(d / "scenes"), str(d / "scenes" / "ground_truth.tsv")]


def run_config(task_args: list[str], ranks: int, threads: int, out: Path) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", "train", *task_args,
           "-o", str(out), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    rec["threads_per_rank"] = threads
    return rec


def projection(step_s: float, nbytes: int) -> list[dict]:
    rows = []
    for n in (8, 32, 128):
        for name, (bandwidth, alpha) in NETWORKS.items():
            ring = 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / bandwidth
            rows.append({"ranks": n, "network": name, "ring_allreduce_ms": round(1e3 * ring, 3),
                         "speedup": round(n * step_s / (step_s + ring), 1)})
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=25, help="steps per configuration (first 3 untimed)")
    ap.add_argument("--tasks", default="charlm,sed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tasks = {"charlm": ["charlm", str(SAMPLE), "--steps", str(args.steps)]}
        if "sed" in args.tasks:
            tasks["sed"] = ["sed", *sed_data(d), "--steps", str(args.steps), "--val-frac", "0.1"]
        for name in args.tasks.split(","):
            results = [run_config(tasks[name], ranks, threads, d / f"{name}.st")
                       for ranks, threads in ((1, 1), (2, 1), (1, 2))]
            for rec in results:
                print(json.dumps({"task": name, **rec}))
            one = results[0]
            for row in projection(one["step_s"], results[1]["allreduce_bytes_per_step"]):
                print(json.dumps({"task": name, "projection": row}))


if __name__ == "__main__":
    main()
