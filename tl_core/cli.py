"""python -m tl_core train|predict|export|runs: the engine from the command line (contract: docs/ARCHITECTURE.md).

Progress goes to stderr; with --json the last line of stdout is one JSON object. Exit status 0 on success,
non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from tl_core import events, settings
from tl_core.errors import HeadstartError, user_message


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("headstart: interrupted", file=sys.stderr)
        return 130
    except (HeadstartError, ValueError, OSError) as exc:
        print(f"headstart: {user_message(exc)}".replace("\n", " "), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract is one line on stderr, never a traceback
        print(f"headstart: {user_message(exc)}".replace("\n", " "), file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tl_core", description="Headstart: fine-tune a pretrained image model."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser(
        "train",
        help="train on DATA_DIR (one sub-folder per class, or train/ and val/)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_options(t)
    t.add_argument("--json", action="store_true", help="print the summary as JSON on the last line of stdout")
    t.add_argument(
        "--events",
        action="store_true",
        help="print every training event as one JSON line on stdout, in place of the progress bar (for a program "
        "that follows the run, as the web app's job queue does)",
    )
    t.add_argument(
        "--stop-file",
        metavar="PATH",
        help="stop at the next step once this file exists (how the job queue stops a run of several processes)",
    )
    t.set_defaults(func=_train)

    c = commands.add_parser("resume", help="continue a run that was cut off (killed, crashed, disk full)")
    c.add_argument("run_dir", metavar="RUN_DIR")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on the last line of stdout")
    c.set_defaults(func=_resume)

    p = commands.add_parser("predict", help="label images with a trained run, or with an exported bundle (.zip)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or a bundle made by export (zip or unpacked)")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)

    e = commands.add_parser("export", help="write a run's deployable bundle (zip)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", required=True, metavar="FILE.zip")
    e.add_argument(
        "--check-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="validation pictures ONNX is checked against PyTorch on (default 64)",
    )
    e.add_argument("--json", action="store_true", help="print the export report as JSON on the last line of stdout")
    e.set_defaults(func=_export)

    r = commands.add_parser("runs", help="list the runs in a runs folder")
    r.add_argument("--runs-dir", default=str(settings.runs_dir()))
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)

    b = commands.add_parser(
        "tensorboard", help="write a run's curves as TensorBoard event files (runs write them when they end)"
    )
    b.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    b.set_defaults(func=_tensorboard)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its default, type and help: the CLI cannot drift from the config."""
    from tl_core.config import TrainConfig

    hints, defaults = typing.get_type_hints(TrainConfig), TrainConfig.defaults()
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        if f.name == "data_dir":
            parser.add_argument("data_dir", metavar="DATA_DIR", **meta)
            continue
        if f.name == "resume":
            continue  # its own command, `resume RUN_DIR`: the run folder holds every other setting
        flag = "--" + f.name.replace("_", "-")
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=defaults[f.name], **meta)
        else:
            parser.add_argument(flag, type=kind, default=defaults[f.name], **meta)


def config_argv(config) -> list[str]:
    """`train` arguments that rebuild `config` (a TrainConfig): the inverse of add_config_options."""
    argv = [str(config.data_dir)]
    for name, value in dataclasses.asdict(config).items():
        flag = "--" + name.replace("_", "-")
        if name == "data_dir" or value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def _train(args) -> int:
    from tl_core import distributed
    from tl_core.config import TrainConfig

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name in args})
    if config.processes > 1 and not distributed.launched():
        return _train_in_processes(config, args)
    printer = _EventPrinter() if args.events else None

    def should_stop() -> bool:  # asked through the stop file, or the program following the events went away
        return bool(args.stop_file and os.path.exists(args.stop_file)) or bool(printer and printer.lost)

    status = _run_and_report(config, args.json, printer, should_stop)
    distributed.leave()  # after a run that ended well only (see distributed.leave)
    return status


def _train_in_processes(config, args) -> int:
    """`--processes N` from a plain command line: the same command again under torchrun, N processes on this
    machine (for several machines, start torchrun yourself: see the README)."""
    from tl_core import distributed

    own = ["--json"] * args.json + ["--events"] * args.events + ["--stop-file", args.stop_file] * bool(args.stop_file)
    status, report = distributed.run_processes(
        config_argv(config) + own,
        config.processes,
        lambda line: print(line, end="", flush=True),
        echo_errors=True,
        device=config.device,
    )
    if status != 0:
        print(f"headstart: {distributed.failure_sentence(report, config.processes)}", file=sys.stderr)
    return status


def _resume(args) -> int:
    from tl_core.config import TrainConfig

    return _run_and_report(TrainConfig.for_resume(args.run_dir), args.json)


def _run_and_report(config, as_json: bool, on_event=None, should_stop=None) -> int:
    from tl_core import distributed
    from tl_core.auto import run_strategy

    bar = on_event or _ProgressPrinter()
    try:
        summary = run_strategy(config, on_event=bar, should_stop=should_stop)
    finally:
        bar.close()
    if distributed.launched() and int(os.environ.get("RANK", "0")) != 0:
        return 0 if summary["status"] in ("finished", "stopped") else 1  # rank 0 reports for them all
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        _print_summary(summary)
    return 0 if summary["status"] in ("finished", "stopped") else 1


def _predict(args) -> int:
    from tl_core.bundle import load_predictor

    predictor = load_predictor(args.run_dir, device=args.device)
    results = predictor.predict_paths(args.images, top_k=args.top_k)
    for result in results:
        if args.json:
            print(json.dumps(result))
        elif result.get("error"):
            print(f"{result['path']}: skipped: {result['error']}")
        else:
            print(f"{result['path']}: {result['label']} ({result['confidence']:.1%})")
    return 0 if any(r.get("label") for r in results) else 1


def _export(args) -> int:
    from tl_core.export import export_bundle

    out = export_bundle(args.run_dir, Path(args.out), check_images=args.check_images)
    print(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    if args.json:
        import zipfile

        with zipfile.ZipFile(out) as zf:
            print(json.dumps({"bundle": str(out), **json.loads(zf.read("export_report.json"))}))
    return 0


def _tensorboard(args) -> int:
    from tl_core.runs import load_run
    from tl_core.tensorboard import write_events

    for run_dir in args.run_dirs:
        load_run(run_dir)  # a sentence, not a traceback, for a folder that is not a run
        print(write_events(run_dir))
    print("Open them with: tensorboard --logdir " + str(Path(args.run_dirs[0]).resolve().parent))
    return 0


def _runs(args) -> int:
    from tl_core.runs import list_runs

    runs = list_runs(args.runs_dir)
    for run in runs:
        row = {
            "run_dir": str(run.run_dir),
            "status": run.status,
            "backbone": run.config.get("backbone"),
            "best_val_accuracy": run.summary.get("best_val_accuracy"),
        }
        if args.json:
            print(json.dumps(row))
        else:
            acc = row["best_val_accuracy"]
            print(f"{run.id}  {run.status:<11}  {row['backbone']:<24}  {'-' if acc is None else f'{acc:.1%}'}")
    return 0


class _EventPrinter:
    """Every event as one JSON line on stdout (`--events`), for a program that follows the run."""

    def __init__(self):
        self.lost = False  # the follower went away (the web app stopped): the run stops, as one in the app would

    def __call__(self, event: events.Event) -> None:
        if self.lost:
            return
        try:
            print(json.dumps(event.record(), default=str), flush=True)
        except (BrokenPipeError, OSError):
            self.lost = True

    def close(self) -> None:
        pass


class _ProgressPrinter:
    """A tqdm bar on stderr that follows the training events."""

    def __init__(self):
        self._bar = None
        self._stage = None
        self._handlers = {
            events.Progress: self._progress,
            events.Started: self._started,
            events.Step: self._step,
            events.EpochEnd: self._epoch,
            events.Message: lambda e: print(e.text, file=sys.stderr),
            events.FeatureCache: lambda e: print(e.text, file=sys.stderr),
        }

    def __call__(self, event: events.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler:
            handler(event)

    def _progress(self, event: events.Progress) -> None:
        self._enter_stage(event.stage, event.total)
        self._bar.n = event.done
        self._bar.refresh()

    def _started(self, e: events.Started) -> None:
        print(
            f"Training {e.backbone} ({e.weights} weights) on {e.device_name}: {e.num_train} training / {e.num_val} "
            f"validation images, {e.frozen_blocks}/{e.total_blocks} blocks frozen, {e.trainable_params:,} of "
            f"{e.total_params:,} parameters train.",
            file=sys.stderr,
        )

    def _step(self, event: events.Step) -> None:
        self._enter_stage("train", event.total_steps)
        self._bar.n = event.step
        self._bar.set_postfix(
            epoch=event.epoch, loss=f"{event.loss:.3f}", img_s=f"{event.images_per_second:.0f}", refresh=False
        )
        self._bar.refresh()

    def _epoch(self, e: events.EpochEnd) -> None:
        self._write(
            f"epoch {e.epoch}/{e.epochs}: train loss {e.train_loss:.3f}, val loss {e.val_loss:.3f}, "
            f"val accuracy {e.val_accuracy:.1%}" + ("  (best so far, saved)" if e.best else "")
        )

    def _enter_stage(self, stage: str, total: int) -> None:
        if stage != self._stage or self._bar is None:
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(
                total=total,
                desc=events.STAGE_LABELS.get(stage, stage),
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
            self._stage = stage

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _print_summary(summary: dict) -> None:
    print(f"{summary['status']}: {summary.get('message', '')}")
    print(f"run folder: {summary['run_dir']}")
    if summary.get("best_val_accuracy") is not None:
        print(
            f"best validation accuracy: {summary['best_val_accuracy']:.1%} "
            f"({summary['num_val']} images, {summary['num_classes']} classes)"
        )
