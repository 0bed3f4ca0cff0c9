"""Map building past one process: shards that independent workers build, then one merge.

A feature map is a grid of blocks, each computed from its own satellite crop, so blocks split
freely between workers (:func:`~.feature_map.build_feature_map` with ``shard``); a place index
splits by heading. Three ways to run the workers, all writing the same shard files:

* ``--workers N`` on one machine: N worker processes of this command, one thread each;
* ``torchrun --nnodes M --nproc_per_node N -m g2s_localization build-feature-map ...`` on a
  cluster with a shared file system: each rank builds ``RANK`` of ``WORLD_SIZE`` and rank 0 merges
  after a barrier (gloo, CPU);
* ``--shard K/N`` from any scheduler (array jobs), then ``g2s merge-maps``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Map = TypeVar("Map")  # SatelliteFeatureMap or PlaceIndex: anything with save(path)


class WorkerFailed(RuntimeError):
    """A worker process of a sharded build exited with an error (its output is in the message)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; anything else raises ValueError."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"--shard takes K/N (0 <= K < N), got {text!r}") from exc
    if not 0 <= index < count:
        raise ValueError(f"--shard takes K/N with 0 <= K < N, got {text!r}")
    return index, count


def shard_path(out: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` of ``out`` is written: beside it."""
    return out.with_name(f"{out.stem}.shard{index}of{count}{out.suffix}")


def torchrun_shard() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def torchrun_barrier() -> None:
    """Wait for every rank (gloo over torchrun's rendezvous); the process group ends afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_local_workers(argv: list[str], out: Path, workers: int, threads: int = 1) -> list[Path]:
    """Run ``g2s <argv> --shard k/workers --out <shard file> --threads threads`` for every ``k`` at
    once and wait; the shard files in order. A failed worker raises WorkerFailed with its output."""
    procs, paths = [], []
    for k in range(workers):
        path = shard_path(out, k, workers)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), WORLD_SIZE="1", RANK="0")
        procs.append(subprocess.Popen([sys.executable, "-m", "g2s_localization", *argv, "--shard", f"{k}/{workers}",
                                       "--out", str(path), "--threads", str(threads)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        paths.append(path)
    failures = []
    for k, proc in enumerate(procs):
        output, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"worker {k}/{workers} exited with {proc.returncode}:\n{output.strip()[-2000:]}")
    if failures:
        raise WorkerFailed("\n".join(failures))
    return paths


def set_threads(threads: int | None) -> None:
    """One worker's share of the cores, for torch and OpenCV (``None``: their defaults)."""
    import cv2
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)  # tile decoding and warps have their own pool


def build_in_shards(build: Callable[[tuple[int, int]], Map], load: Callable[[Path], Map],
                    merge: Callable[[list[Map]], Map], out: Path, worker_argv: list[str], workers: int = 1,
                    shard: str | None = None, distributed: bool = True) -> Map | None:
    """Build a map (``build(shard)``; it has ``save(path)``) whole, as one shard, or across workers, and
    write it to ``out``. Returns what this process wrote to ``out``, or None for a torchrun rank
    other than 0 (its shard went beside ``out``, rank 0 merged it). ``distributed=False``: ignore
    torchrun (a step only rank 0 goes on to)."""
    if shard is not None:  # one shard for an outside scheduler; `g2s merge-maps` joins them
        part = build(parse_shard(shard))
        part.save(out)
        return part
    if workers > 1:
        paths = run_local_workers(worker_argv, out, workers)
        return _merge_files(paths, load, merge, out)
    ranked = torchrun_shard() if distributed else None
    if ranked is None:
        whole = build((0, 1))
        whole.save(out)
        return whole
    build(ranked).save(shard_path(out, *ranked))
    torchrun_barrier()
    if ranked[0] != 0:
        return None
    return _merge_files([shard_path(out, k, ranked[1]) for k in range(ranked[1])], load, merge, out)


def _merge_files(paths: list[Path], load: Callable[[Path], Map], merge: Callable[[list[Map]], Map], out: Path) -> Map:
    merged = merge([load(p) for p in paths])
    merged.save(out)
    for path in paths:
        path.unlink()
    return merged
