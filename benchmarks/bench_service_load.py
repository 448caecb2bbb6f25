"""Load on the service: N jobs from M concurrent clients against `loramerge serve` (a real process
with its embedded Redis and W workers). Prints submission latency p50/p99 next to a bare /healthz
request measured the same way (the peer), submission and completion throughput, and checks that
every job reached a terminal state exactly once. Not a test.

  .venv/bin/python -m benchmarks.bench_service_load --jobs 200 --clients 20 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

TERMINAL = {"succeeded", "failed", "cancelled"}


def write_adapter(folder: Path, seed: int, modules: int = 8, dim: int = 64, rank: int = 4) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(modules):
        name = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        tensors[f"{name}.lora_A.weight"] = torch.randn(rank, dim, generator=gen) / dim**0.5
        tensors[f"{name}.lora_B.weight"] = torch.randn(dim, rank, generator=gen) * 0.1
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "bench",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return str(folder)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--method", default="task_arithmetic")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="lm-load-"))
    sources = [write_adapter(base / "roots" / f"a{i}", seed=i) for i in range(4)]
    port = free_port()
    env = {**os.environ, "LORAMERGE_DATA_DIR": str(base / "data"), "LORAMERGE_LOCAL_ROOTS": str(base / "roots"),
           "LORAMERGE_MAX_QUEUED_JOBS": str(args.jobs + 10), "LORAMERGE_DEVICE": "cpu"}  # fmt: skip
    log = (base / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((base / "serve.log").read_text()[-3000:])
                return 1
            time.sleep(0.2)
        return run_load(url, sources, args)
    finally:
        server.terminate()
        server.wait(timeout=60)


def run_load(url: str, sources: list[str], args) -> int:
    def submit(i: int, client: httpx.Client) -> tuple[float, str, int]:
        spec = {
            "method": args.method,
            "adapters": [{"source": sources[i % 4]}, {"source": sources[(i + 1) % 4], "weight": 1 + i / args.jobs}],
        }
        started = time.perf_counter()
        response = client.post("/v1/merges", json=spec, headers={"Idempotency-Key": f"load-{i}"})
        return time.perf_counter() - started, response.json().get("id", ""), response.status_code

    def healthz(client: httpx.Client) -> float:
        started = time.perf_counter()
        client.get("/healthz")
        return time.perf_counter() - started

    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(args.clients)]
    with ThreadPoolExecutor(args.clients) as pool:
        peer = list(pool.map(lambda i: healthz(clients[i % args.clients]), range(args.jobs)))
        started = time.perf_counter()
        results = list(pool.map(lambda i: submit(i, clients[i % args.clients]), range(args.jobs)))
        submit_s = time.perf_counter() - started
    latencies = [r[0] for r in results]
    ids = [r[1] for r in results if r[2] == 202]
    statuses = {}
    poller = clients[0]
    deadline = time.monotonic() + args.timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = poller.get(f"/v1/merges/{job_id}").json()["status"]
            if status in TERMINAL:
                statuses[job_id] = status
                pending.discard(job_id)
        time.sleep(0.2)
    total_s = time.perf_counter() - started
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    peer_p50, peer_p99 = percentile(peer, 0.5), percentile(peer, 0.99)
    print(f"jobs {args.jobs}, clients {args.clients}, workers {args.workers}, method {args.method}")
    print(
        f"accepted (202): {len(ids)}   distinct ids: {len(set(ids))}   other statuses: {[r[2] for r in results if r[2] != 202][:5]}"
    )
    print(
        f"submission latency  p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   mean {statistics.mean(latencies) * 1000:.1f} ms"
    )
    print(
        f"peer GET /healthz   p50 {peer_p50 * 1000:7.1f} ms   p99 {peer_p99 * 1000:7.1f} ms   (ratio p50 {p50 / peer_p50:.1f}x, p99 {p99 / peer_p99:.1f}x)"
    )
    print(
        f"submission throughput {args.jobs / submit_s:.1f} jobs/s; all terminal after {total_s:.1f} s ({len(statuses) / total_s:.1f} jobs/s)"
    )
    print(f"terminal: {len(statuses)}/{len(ids)} {counts}   still pending: {len(pending)}")
    ok = len(ids) == args.jobs == len(set(ids)) and not pending
    print("OK: every job reached a terminal state once" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
