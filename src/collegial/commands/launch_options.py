"""``--launcher local|submitit`` and its options, for the commands that run sweeps of training
runs (:mod:`collegial.launch`)."""

from __future__ import annotations

import argparse

from collegial.commands.common import device_from_args
from collegial.launch import LAUNCHERS, Launcher


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the runs execute")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: on this machine (default); submitit: one job per run in a Slurm job array "
                   "(local processes where no Slurm is found); needs pip install 'collegial[slurm]'")
    g.add_argument("--jobs", type=int, default=1, metavar="K", help="with --launcher local: runs at once (default 1)")
    g.add_argument("--partition", default=None, help="with --launcher submitit: the Slurm partition")
    g.add_argument("--gpus-per-job", type=int, default=0, metavar="G",
                   help="with --launcher submitit: GPUs per run; G > 1: the job runs G tasks, one DDP process per GPU")
    g.add_argument("--time-limit", type=int, default=240, metavar="MIN",
                   help="with --launcher submitit: minutes per run; a run that reaches it is requeued and continues "
                   "from its checkpoint (default 240)")
    g.add_argument("--array-parallelism", type=int, default=64, metavar="N",
                   help="with --launcher submitit: runs of the array at once (default 64)")


def launcher_from_args(args: argparse.Namespace) -> Launcher:
    """The :class:`Launcher` the options ask for (checked before any work)."""
    return Launcher(args.launcher, args.jobs, args.partition, args.gpus_per_job, args.time_limit,
                    args.array_parallelism)


def jobs_device(args: argparse.Namespace, launcher: Launcher) -> str:
    """The device the runs train on: ``--device`` as every command resolves it, except that jobs
    given GPUs (``--launcher submitit --gpus-per-job G``) default to cuda without looking for one
    here (the submitting machine may have none; the jobs run elsewhere)."""
    if launcher.kind == "submitit" and launcher.gpus_per_job > 0 and args.device in (None, "cuda"):
        return "cuda"
    return device_from_args(args)
