"""How a merge's cost grows: peak memory and time for n adapters of Llama-3-8B shapes, against the plain
cost of reading the inputs and writing an output of the same size, and DO-Merging's time against n.

    python -m benchmarks.bench_scale --adapters 8 16 32 --layers 32            # peak RSS, time, vs I/O
    python -m benchmarks.bench_scale --adapters 8 --serve                      # ... and the same job via HTTP
    python -m benchmarks.bench_scale --ortho 2 4 8 16 32 64 --device cpu       # DO-Merging at one layer

Each merge runs in a fresh process (``run_merge``, files on disk, as the worker runs it), which reports
its own peak resident memory; the I/O baseline copies the input files and writes as many bytes as the
merge wrote. Adapters are written once into ``--workdir`` (default: a temporary folder) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.memory import measure
from merge_core.engine import merge_adapters, resolve_device
from merge_core.registry import get_method
from support.factories import memory_adapter, write_adapter_folder

# Llama-3-8B: hidden 4096, MLP 14336, 8 KV heads of 128
LLAMA3_8B = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}


def shapes(layers: int) -> dict[str, tuple[int, int]]:
    return {f"model.layers.{i}.{m}": shape for i in range(layers) for m, shape in LLAMA3_8B.items()}


def write_adapters(workdir: Path, n: int, layers: int, rank: int) -> list[Path]:
    folders = []
    for i in range(n):
        folder = workdir / f"r{rank}-l{layers}" / f"adapter-{i:02d}"
        if not (folder / "adapter_model.safetensors").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            write_adapter_folder(folder, shapes=shapes(layers), rank=rank, seed=i)
        folders.append(folder)
    return folders


def _child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: one merge, then its own peak RSS and time as JSON."""
    from merge_core.pipeline import run_merge
    from merge_core.spec import parse_spec

    torch.set_num_threads(args.threads or torch.get_num_threads())
    spec = parse_spec(
        {
            "method": args.method,
            "adapters": [{"source": f} for f in args.child],
            "output": {"rank": args.rank_out, "dtype": args.dtype},
        }
    )
    start = time.perf_counter()
    outcome = run_merge(spec, Path(args.out), device=args.device)
    seconds = time.perf_counter() - start
    written = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "written_bytes": written, "modules": outcome.summary["modules"]}))


def io_baseline(folders: list[Path], into: Path, nbytes: int) -> float:
    """Seconds to copy every input file and write ``nbytes`` more: what any merge must at least pay."""
    into.mkdir(parents=True)
    start = time.perf_counter()
    for i, folder in enumerate(folders):
        shutil.copyfile(folder / "adapter_model.safetensors", into / f"{i}.safetensors")
    block = os.urandom(1 << 20)
    with (into / "out.bin").open("wb") as fh:
        for _ in range(nbytes >> 20):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - start


def through_the_service(folders: list[Path], workdir: Path, args: argparse.Namespace) -> float:
    """Seconds from POST to ``succeeded`` for the same merge as a job: real Redis, a real worker, the
    API over HTTP, inputs hard-linked under the server's local root, the result in its local store."""
    from support.stack import ProcessStack

    shutil.rmtree(workdir / "stack", ignore_errors=True)
    with ProcessStack(workdir / "stack") as stack:  # started on entry; its workers merge on the CPU
        stack.wait_ready()
        sources = []
        for i, folder in enumerate(folders):
            linked = stack.roots / f"a{i}"
            linked.mkdir()
            for file in folder.iterdir():
                os.link(file, linked / file.name)
            sources.append(str(linked))
        spec = {"method": args.method, "adapters": [{"source": s} for s in sources]}
        spec["output"] = {"dtype": args.dtype, **({"rank": args.rank_out} if args.rank_out else {})}
        with stack.client() as client:
            start = time.perf_counter()
            job = client.post("/v1/merges", json=spec).json()
            done = stack.wait_terminal(client, job["id"], timeout=3600)
            seconds = time.perf_counter() - start
        if done["status"] != "succeeded":
            raise RuntimeError(f"the job ended {done['status']}: {done.get('error')}")
    shutil.rmtree(workdir / "stack", ignore_errors=True)
    return seconds


def scale(args: argparse.Namespace, workdir: Path) -> None:
    print(f"{args.method}, r{args.rank} adapters, {args.layers} layers of Llama-3-8B shapes, output dtype {args.dtype}")
    head = "| adapters | input GiB | merge s | peak RSS GiB | output GiB | copy inputs + write output s | merge / I/O |"
    rule = "|---|---|---|---|---|---|---|"
    if args.serve:
        head, rule = head + " job via HTTP s | job / (merge + I/O) |", rule + "---|---|"
    print(head)
    print(rule)
    for n in args.adapters:
        folders = write_adapters(workdir, n, args.layers, args.rank)
        size = sum((f / "adapter_model.safetensors").stat().st_size for f in folders)
        out = workdir / f"out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench_scale",
            "--method",
            args.method,
            "--dtype",
            args.dtype,
            "--out",
            str(out),
        ]
        command += ["--device", args.device, "--threads", str(args.threads)]
        command += ["--rank-out", str(args.rank_out)] if args.rank_out else []
        result = subprocess.run([*command, "--child", *map(str, folders)], capture_output=True, text=True, check=True)
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        baseline = io_baseline(folders, workdir / f"io-{n}", stats["written_bytes"])
        shutil.rmtree(workdir / f"io-{n}")
        shutil.rmtree(out)
        gib = 1024**3
        row = (
            f"| {n} | {size / gib:.2f} | {stats['seconds']:.1f} | {stats['peak_bytes'] / gib:.2f} | "
            f"{stats['written_bytes'] / gib:.2f} | {baseline:.1f} | {stats['seconds'] / baseline:.2f} |"
        )
        if args.serve:
            job = through_the_service(folders, workdir, args)
            row += f" {job:.1f} | {job / (stats['seconds'] + baseline):.2f} |"
        print(row, flush=True)


def ortho(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    method = get_method("do_merging")
    params = method.parse_params({})
    one_layer = shapes(1)
    print(f"DO-Merging (100 steps) on one Llama-3-8B layer, r{args.rank} adapters, {device}")
    print("| adapters n | Σr | seconds | peak GiB |")
    print("|---|---|---|---|")
    for n in args.ortho:
        adapters = [memory_adapter(one_layer, args.rank, seed=i, dtype=torch.float32) for i in range(n)]
        with measure(device) as stats:
            merge_adapters(adapters, method, params, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        print(f"| {n} | {n * args.rank} | {stats['seconds']:.2f} | {stats['peak_bytes'] / 1024**3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, nargs="*", default=[], help="adapter counts for the scale table")
    parser.add_argument("--ortho", type=int, nargs="*", default=[], help="adapter counts for DO-Merging at one layer")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rank-out", type=int, default=None, help="output.rank (default: exact)")
    parser.add_argument("--method", default="task_arithmetic")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve", action="store_true", help="also run each merge as a job through the service")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        if args.adapters:
            scale(args, workdir)
        if args.ortho:
            ortho(args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
