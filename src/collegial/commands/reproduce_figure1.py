"""``collegial reproduce figure1``: appendix Figure 1 at CPU scale, test error along the primal and
dual curves against the block's variance and naive predictors, with pre-registered criteria
(trains models; resumable; :mod:`collegial.experiments.figure1`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from collegial.commands.common import add_device_option, add_progress_option, device_from_args, emit, int_list_arg
from collegial.commands.launch_options import add_launcher_arguments, launcher_from_args
from collegial.commands.probe_options import add_probe_arguments, probe_inputs
from collegial.errors import UserError, flag_names
from collegial.experiments.figure1 import OUT_FILES, config_for, pilot_line, run_figure1
from collegial.experiments.figure1_report import markdown


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


class _Target:
    help = ("appendix Figure 1 at CPU scale: test error along the primal and dual curves against the predicted "
            "variance and naive predictors, with pre-registered criteria (trains models)")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--family", default="mlp", help="mlp (default) or resnext11 (or any collegial family)")
        p.add_argument("--dataset", default=None,
                       help="shipped dataset (default fashion-mnist for mlp and resnext11, else the family's own)")
        p.add_argument("--baseline", default=None, metavar="ARCH", help="baseline MxNd (mlp 1x512d, resnext11 1x64d)")
        p.add_argument("--points", type=int, default=None, help="architectures per curve (default 5)")
        p.add_argument("--seeds", type=int, default=None, help="training seeds per architecture and rate (mlp 3, resnext11 4); a rerun with more continues the sweep")
        p.add_argument("--epochs", type=int, default=None, help="epochs per run (mlp 3, resnext11 2)")
        p.add_argument("--lr", type=float, default=None, help="the shared learning rate, reported beside the chosen ones (0.05)")
        p.add_argument("--lrs", type=_floats, default=None, metavar="LR,LR,...",
                       help="the grid each architecture's rate is chosen from on validation (default 0.025,0.05,0.1)")
        p.add_argument("--val-images", type=int, default=None,
                       help="training images held out of every run to choose the rate (mlp 5000, resnext11 2000)")
        p.add_argument("--select-seeds", type=int, default=None, help="seeds per rate when choosing it (1)")
        p.add_argument("--pilot-seeds", type=int, default=None, help="seeds of the pilot that sizes the sweep (default 3, or --seeds when fewer)")
        p.add_argument("--target-difference", type=float, default=None, metavar="D",
                       help="test-error points the sweep should resolve (mlp 0.3, resnext11 0.5); the pilot says "
                            "how many seeds that takes")
        p.add_argument("--dual-margin", type=float, default=None,
                       help="pre-registered: the dual optimum at most this many points worse (default D)")
        p.add_argument("--train-limit", type=int, default=None, help="training images, the held-out ones included (mlp all, resnext11 12000)")
        p.add_argument("--test-limit", type=int, default=None, help="test images (mlp all, resnext11 5000)")
        p.add_argument("--alpha-file", default=None, help="the family's alpha.json (default: run Algorithm 1)")
        p.add_argument("--trials", type=int, default=None, help="Algorithm 1's T when it runs here (2000)")
        p.add_argument("--widths", type=int_list_arg, default=None,
                       help="Algorithm 1's widths when it runs here (mlp 2..512; else its defaults, 2..128)")
        p.add_argument("--whole-trials", type=int, default=None,
                       help="initializations per pair of the whole-model variance (mlp 32, resnext11 16; 0: skip)")
        p.add_argument("--whole-pairs", type=int, default=None, help="image pairs of the whole-model variance (8)")
        p.add_argument("--pilot-only", action="store_true",
                       help="stop after the pilot and print how many seeds resolve --target-difference (the same "
                            "command without it continues the sweep, reusing the pilot's runs)")
        p.add_argument("--quick", action="store_true",
                       help="a tiny sweep in about a minute: a smoke test of the pipeline, no conclusion")
        add_device_option(p, "training and the whole-model variance")
        add_progress_option(p)
        add_probe_arguments(p)
        add_launcher_arguments(p)

    @flag_names({"out": "--out", "overwrite": "--overwrite"})
    def run(self, args: argparse.Namespace) -> int:
        if args.out is None:
            raise UserError("reproduce figure1 trains models: give --out DIR (a rerun continues it)")
        cfg = config_for(
            args.family, args.quick, dataset=args.dataset, baseline=args.baseline, points=args.points,
            seeds=args.seeds, epochs=args.epochs, lr=args.lr, lrs=args.lrs, val_images=args.val_images,
            select_seeds=args.select_seeds, pilot_seeds=args.pilot_seeds, target_difference=args.target_difference,
            dual_margin=args.dual_margin, train_limit=args.train_limit, test_limit=args.test_limit,
            alpha_file=args.alpha_file, trials=args.trials, widths=args.widths, whole_trials=args.whole_trials,
            whole_pairs=args.whole_pairs, device=device_from_args(args),
        )
        inputs = probe_inputs(args) if args.alpha_file is None else None
        launcher = launcher_from_args(args)
        progress = (not args.json) if args.progress is None else args.progress
        obj = run_figure1(cfg, Path(args.out), overwrite=args.overwrite, progress=progress, inputs=inputs,
                          launcher=launcher, pilot_only=args.pilot_only)
        if args.pilot_only:
            emit(obj, pilot_line(obj["pilot"]).removeprefix("[figure1] "), as_json=args.json)
            return 0
        obj["files"] = [str(Path(args.out) / n) for n in OUT_FILES]
        emit(obj, markdown(obj), as_json=args.json)
        return 0


REPRODUCE_TARGET = _Target()
