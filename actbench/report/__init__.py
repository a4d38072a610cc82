"""The report of a sweep directory: `sweep` (the table of every configuration, each compared with
its baseline activation; its files and figures) and `study` (the fair study's report at its root,
the confirm stage's sweep report inside), `atlas` (the answer across settings, each setting's study
report in its folder); this module says which a directory gets, from the
command line and after a multirun.

    python -m actbench.report SWEEP_DIR [--baseline relu] [--metric auto] [--effect 0.2]

After a multirun, `SweepReport` writes it with the settings of the config group `report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback

from actbench.errors import UserError
from actbench.report.atlas import write_atlas_report
from actbench.report.study import write_study_report
from actbench.report.sweep import DEFAULTS, Comparison, ReportError, compare, label, summarize, verdict, write_report

__all__ = ["main", "SweepReport", "write_report", "write_study_report", "write_atlas_report", "summarize", "compare", "verdict", "label", "Comparison",
           "ReportError", "UserError", "DEFAULTS"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (one subdirectory per run)")
    d = DEFAULTS
    parser.add_argument("--baseline", default=d["baseline"], help=f"activation every other is compared against (default {d['baseline']})")
    parser.add_argument("--metric", default=d["metric"], help=f"final metric to rank and test (default {d['metric']}: the dataset's own, test_acc or test_loss)")
    parser.add_argument("--effect", type=float, default=d["effect"],
                        help=f"the difference worth detecting, in the units the report shows: pp for accuracies (default {d['effect']})")
    parser.add_argument("--alpha", type=float, default=d["alpha"], help=f"significance level (default {d['alpha']})")
    parser.add_argument("--power", type=float, default=d["power"], help=f"power of the detectable effect (default {d['power']})")
    parser.add_argument("--pair", action="append", default=[], metavar="ACTIVATION=TWIN",
                        help="also compare an activation with its twin, in a section of their own (repeatable): --pair reglu=relu")
    args = parser.parse_args(argv)
    from actbench import atlas, study

    write, tuned = write_report, {}
    if atlas.read(args.sweep_dir) is not None:  # an atlas's root: the answer across its settings
        if args.metric != d["metric"] or args.pair or args.effect != d["effect"]:
            print(f"actbench.report: {args.sweep_dir} is an atlas: each setting is ranked by its own metric, effect and pairs; "
                  f"give them to one setting's report (python -m actbench.report {args.sweep_dir}/SETTING)", file=sys.stderr)
            return 2
        write = write_atlas_report
    elif study.read_selection(args.sweep_dir) is not None:  # a study's root: its own report, the confirm stage's inside
        write = write_study_report
    elif (selection := study.read_selection(args.sweep_dir.parent)) is not None and args.sweep_dir.name == "confirm":
        tuned = {"tuned": study.tuned_keys(selection)}
    try:
        pairs = dict(p.split("=", 1) for p in args.pair if "=" in p)
        if len(pairs) != len(args.pair):
            raise ReportError(f"--pair {next(p for p in args.pair if '=' not in p)!r}: must be ACTIVATION=TWIN, e.g. reglu=relu")
        path = write(args.sweep_dir, baseline=args.baseline, metric=args.metric, effect=args.effect, alpha=args.alpha, power=args.power, pairs=pairs, **tuned)
    except UserError as e:
        print(f"actbench.report: {e}", file=sys.stderr)
        return 2
    # The console gets the report minus its figure links, which only make sense next to the PNGs.
    head, _, tail = path.read_text().partition("\n## Figures")
    print(head.rstrip())
    if "\n## Runs not in the table" in tail:
        print("\n## Runs not in the table" + tail.split("\n## Runs not in the table", 1)[1].rstrip())
    print(f"\nreport: {path}")
    return 0


class SweepReport(HydraCallback):
    """After a multirun, write the sweep's report beside its runs with the settings of the config
    group `report` (conf/report/); `report=none` leaves it empty, and no report is written."""

    def on_multirun_end(self, config, **kwargs) -> None:
        settings = config.get("report")
        if not settings:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            write = write_report
            if config.get("atlas"):  # experiment=atlas: the answer across settings, each setting's study report inside
                write = write_atlas_report
            elif config.get("study"):  # experiment=fair: the study's report, its confirm stage's inside
                write = write_study_report
            path = write(sweep_dir, **{k: settings.get(k, v) for k, v in DEFAULTS.items()})
            print(f"report: {path}", flush=True)
        except Exception as e:  # noqa: BLE001 - a report problem must not hide the finished runs
            print(f"actbench: could not write the report for {sweep_dir}: {e}", file=sys.stderr, flush=True)
