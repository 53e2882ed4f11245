"""``collegial reproduce figure1``: appendix Figure 1 at CPU scale, test error along the primal and
dual curves (trains models; resumable; :mod:`collegial.experiments.figure1`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from collegial.commands.common import emit
from collegial.commands.launch_options import add_launcher_arguments, launcher_from_args
from collegial.commands.probe_options import add_probe_arguments, probe_inputs
from collegial.errors import UserError, flag_names
from collegial.experiments.figure1 import OUT_FILES, config_for, markdown, run_figure1


class _Target:
    help = "appendix Figure 1 at CPU scale: test error along the primal and dual curves (trains models)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--family", default="mlp", help="mlp (default) or resnext11 (or any collegial family)")
        p.add_argument("--dataset", default=None,
                       help="shipped dataset (default fashion-mnist for mlp and resnext11, else the family's own)")
        p.add_argument("--baseline", default=None, metavar="ARCH", help="baseline MxNd (mlp 1x128d, resnext11 1x64d)")
        p.add_argument("--points", type=int, default=None, help="architectures per curve (default 5)")
        p.add_argument("--seeds", type=int, default=None, help="training seeds (mlp 6, resnext11 3)")
        p.add_argument("--epochs", type=int, default=None, help="epochs per run (mlp 6, resnext11 2)")
        p.add_argument("--train-limit", type=int, default=None, help="training images (mlp all, resnext11 5000)")
        p.add_argument("--test-limit", type=int, default=None, help="test images (mlp all, resnext11 5000)")
        p.add_argument("--alpha-file", default=None, help="the family's alpha.json (default: run Algorithm 1)")
        p.add_argument("--trials", type=int, default=None, help="Algorithm 1's T when it runs here (2000)")
        p.add_argument("--device", default=None, help="training device: cpu (default) or cuda")
        p.add_argument("--quick", action="store_true", help="a tiny sweep in about a minute (checks the pipeline)")
        add_probe_arguments(p)
        add_launcher_arguments(p)

    @flag_names({"out": "--out", "overwrite": "--overwrite"})
    def run(self, args: argparse.Namespace) -> int:
        if args.out is None:
            raise UserError("reproduce figure1 trains models: give --out DIR (a rerun continues it)")
        cfg = config_for(
            args.family, args.quick, dataset=args.dataset, baseline=args.baseline, points=args.points,
            seeds=args.seeds, epochs=args.epochs, train_limit=args.train_limit, test_limit=args.test_limit,
            alpha_file=args.alpha_file, trials=args.trials, device=args.device,
        )
        inputs = probe_inputs(args) if args.alpha_file is None else None
        launcher = launcher_from_args(args)
        obj = run_figure1(cfg, Path(args.out), overwrite=args.overwrite, progress=not args.json, inputs=inputs,
                          launcher=launcher)
        obj["files"] = [str(Path(args.out) / n) for n in OUT_FILES]
        emit(obj, markdown(obj), as_json=args.json)
        return 0


REPRODUCE_TARGET = _Target()
