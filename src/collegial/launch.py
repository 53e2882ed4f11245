"""Where a sweep's runs execute: one after another here, K at once here, or as a job array on a
Slurm cluster through submitit (``--launcher local|submitit``, ``--jobs K``).

A sweep hands :func:`run_jobs` a picklable function and one argument tuple per run; every run
writes its own folder (its checkpoint and ``result.json``), so whichever launcher ran it, a rerun
of the sweep skips what finished and continues what did not. With submitit each run is one task
of a job array (``slurm_array_parallelism`` at once). Without a Slurm cluster, submitit's local
executor runs the tasks as local processes (what the tests use).

Time limits and preemption. Slurm warns a submitit task with ``SIGUSR2`` (90 s before its time
limit; submitit's ``SUBMITIT_PREEMPT_SIGNAL``). :class:`_Task` turns that warning into the
training's own stop request (the handler that :class:`collegial.train.runtime.StopSignal`
installs for ``SIGTERM``): the run writes its checkpoint at the next step and returns; only then
is submitit's handler called, which asks :meth:`_Task.checkpoint` for the same call and requeues
the task; the requeued call finds the checkpoint and continues from it. Outside a training run
(loading data, say) the warning goes straight to submitit (requeued at once; the run continues
from its last checkpoint). A preemption with Slurm's own requeue sends ``SIGTERM``, which the
training already turns into a checkpoint.

Several GPUs per run. With ``gpus_per_job`` G > 1 each job of the array runs G tasks (submitit's
``tasks_per_node``), one per GPU, and each task exports the ``torch.distributed`` environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: submitit's
``TorchDistributedEnvironment``) before calling the run, so that the training joins one DDP
group over the G tasks exactly as under ``torchrun`` (NCCL on CUDA, gloo on the CPU; each task
trains on ``cuda:LOCAL_RANK``). Rank 0 writes the run's files; the job's result is rank 0's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collegial.errors import UserError

LAUNCHERS: tuple[str, ...] = ("local", "submitit")


@dataclass(frozen=True)
class Launcher:
    """``kind``: ``local`` or ``submitit``; ``jobs``: runs at once (local); the submitit
    executor's options: ``partition``, ``gpus_per_job``, ``time_min`` (per task),
    ``array_parallelism``, ``cluster`` (None: Slurm when available, else local processes),
    ``folder`` for submitit's logs (default: the sweep's ``submitit/``), and ``tasks_per_job``
    (None: one per GPU, at least one; more than one: the run is DDP over them)."""

    kind: str = "local"
    jobs: int = 1
    partition: str | None = None
    gpus_per_job: int = 0
    time_min: int = 240
    array_parallelism: int = 64
    cluster: str | None = None
    folder: Path | None = None
    tasks_per_job: int | None = None

    @property
    def tasks(self) -> int:
        """Processes per job: ``tasks_per_job``, by default one per GPU (at least one) under
        submitit and one otherwise."""
        if self.tasks_per_job is not None:
            return self.tasks_per_job
        return max(1, self.gpus_per_job) if self.kind == "submitit" else 1

    @property
    def in_process(self) -> bool:
        """Runs one after another in the calling process (``local``, one job at a time)."""
        return self.kind == "local" and self.jobs == 1

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise UserError(f"unknown launcher {self.kind!r}; choose {', '.join(LAUNCHERS)}")
        if self.jobs < 1 or self.time_min < 1 or self.array_parallelism < 1 or self.gpus_per_job < 0:
            raise UserError("jobs, time limit and array parallelism must be >= 1, GPUs per job >= 0")
        if self.tasks < 1 or (self.tasks > 1 and self.kind != "submitit"):
            raise UserError(f"{self.tasks} tasks per job: at least 1, and several only with the submitit launcher")
        if self.kind == "submitit":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise UserError("the submitit launcher needs the submitit package: pip install 'collegial[slurm]'") from None


class _Task:
    """One run as a submitit task: calls ``fn(*args)`` with ``threads`` torch threads; a time-out
    warning stops the run at a checkpoint first (see the module docstring), then submitit asks
    :meth:`checkpoint`, which requeues the same call. ``distributed``: the task is one of a
    job's several, its run one DDP process (:func:`_export_torch_distributed` first, the
    process group left after)."""

    def __init__(self, fn: Callable[..., Any], threads: int, distributed: bool = False) -> None:
        self.fn, self.threads, self.distributed = fn, threads, distributed

    def __call__(self, *args: Any) -> Any:
        import torch

        torch.set_num_threads(self.threads)
        if self.distributed:
            _export_torch_distributed()
        try:
            with _stop_then_requeue() as warned:
                out = self.fn(*args)
        finally:
            if self.distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if warned:  # the run has written its checkpoint: now let submitit requeue this call
            warned[0](warned[1], None)
        return out

    def checkpoint(self, *args: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def _export_torch_distributed() -> None:
    """Describe this submitit task to ``torch.distributed`` as torchrun would (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); every task of the job keeps
    all of the job's GPUs visible and trains on ``cuda:LOCAL_RANK``."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def _is_training_stop(handler: Any) -> bool:
    """Whether ``handler`` is a training run's stop request (a StopSignal's own handler)."""
    from collegial.train.runtime import StopSignal

    return isinstance(getattr(handler, "__self__", None), StopSignal)


@contextlib.contextmanager
def _stop_then_requeue() -> Iterator[list[Any]]:
    """While a submitit task runs: its time-out signal becomes the training's stop request when
    a training run is listening (the run checkpoints at its next step and returns), and the
    yielded list then holds submitit's handler and the signal, to call after the run; outside a
    training run the signal goes to submitit's handler at once. A no-op outside submitit tasks
    (no handler of submitit's is installed) and off the main thread."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    sig = getattr(signal, name, None)
    warned: list[Any] = []
    if sig is None or threading.current_thread() is not threading.main_thread():
        yield warned
        return
    submitit_handler = signal.getsignal(sig)
    if not callable(submitit_handler):
        yield warned
        return

    def on_warning(signum: int, frame: Any) -> None:
        term = signal.getsignal(signal.SIGTERM)
        if _is_training_stop(term) and not warned:
            warned[:] = [submitit_handler, signum]
            term.__self__.request(signal.Signals(signum).name)  # the run stops at its next step, after a checkpoint
        else:
            submitit_handler(signum, frame)

    signal.signal(sig, on_warning)
    try:
        yield warned
    finally:
        signal.signal(sig, submitit_handler)


def run_jobs(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], launcher: Launcher, folder: Path) -> list[Any]:
    """``[fn(*c) for c in calls]``, executed as ``launcher`` says; results in the order of
    ``calls``. Every call runs with the caller's torch thread count (results do not depend on
    the launcher). ``folder``: where submitit keeps its logs (with ``launcher.folder`` unset)."""
    import torch

    threads = torch.get_num_threads()
    if not calls:
        return []
    if launcher.in_process:
        return [fn(*c) for c in calls]
    if launcher.kind == "local":
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(max_workers=launcher.jobs, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(_Task(fn, threads), *zip(*calls)))
    return _submitit(_Task(fn, threads, launcher.tasks > 1), calls, launcher, launcher.folder or folder)


def _submitit(task: _Task, calls: Sequence[tuple[Any, ...]], launcher: Launcher, folder: Path) -> list[Any]:
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder), cluster=launcher.cluster)
    params: dict[str, Any] = {"timeout_min": launcher.time_min, "slurm_array_parallelism": launcher.array_parallelism}
    if launcher.partition:
        params["slurm_partition"] = launcher.partition
    if launcher.gpus_per_job:
        params["gpus_per_node"] = launcher.gpus_per_job
    params["tasks_per_node"] = launcher.tasks  # G > 1: one DDP process per GPU
    params["cpus_per_task"] = max(1, task.threads)
    ex.update_parameters(**{k: v for k, v in params.items() if ex.cluster == "slurm" or not k.startswith("slurm_")})
    jobs = ex.map_array(task, *zip(*calls))
    out = []
    for job in jobs:
        try:
            out.append(job.results()[0])  # the first task's: rank 0's of a DDP job
        except Exception as e:  # a failed task: one line naming it and its log
            raise UserError(f"job {job.job_id} failed ({type(e).__name__}); its log: {folder}{os.sep}") from None
    return out
