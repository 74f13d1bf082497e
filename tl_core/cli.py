"""python -m tl_core train|predict|export|runs: the engine from the command line (contract: docs/ARCHITECTURE.md).

Progress goes to stderr; with --json the last line of stdout is one JSON object. Exit status 0 on success,
non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tl_core import settings
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

    t = commands.add_parser("train", help="train on DATA_DIR (one sub-folder per class, or train/ and val/)")
    t.add_argument("data_dir", metavar="DATA_DIR", help="folder (or .zip) with one sub-folder per class")
    t.add_argument("--backbone", default="tf_efficientnet_lite0", metavar="NAME", help="a timm model name")
    t.add_argument("--weights", default="auto", metavar="auto|hub|offline|none|PATH")
    t.add_argument("--freeze", default="all", metavar="all|none|K", help="how many backbone blocks stay frozen")
    t.add_argument("--epochs", type=_positive_int, default=10)
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    t.add_argument("--img-size", type=_positive_int, default=None, help="default: the backbone's own")
    t.add_argument("--val-split", type=float, default=0.2)
    t.add_argument("--test-split", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    t.add_argument("--runs-dir", default=str(settings.runs_dir()))
    t.add_argument("--augment", default="auto", choices=["auto", "on", "off"])
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--class-balanced", action="store_true", help="weight the loss so small classes count as much")
    t.add_argument("--early-stopping", type=int, default=5, metavar="EPOCHS", help="0 turns it off")
    t.add_argument("--layer-decay", type=float, default=None, help="e.g. 0.75: earlier blocks learn more slowly")
    t.add_argument("--no-feature-cache", action="store_true")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    t.add_argument("--json", action="store_true", help="print the summary as JSON on the last line of stdout")
    t.set_defaults(func=_train)

    p = commands.add_parser("predict", help="label images with a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)

    e = commands.add_parser("export", help="write a run's deployable bundle (zip)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", required=True, metavar="FILE.zip")
    e.set_defaults(func=_export)

    r = commands.add_parser("runs", help="list the runs in a runs folder")
    r.add_argument("--runs-dir", default=str(settings.runs_dir()))
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _train(args) -> int:
    from tl_core.training import TrainConfig, train

    freeze = args.freeze
    if freeze not in ("all", "none") and not freeze.isdigit():
        raise ValueError(f"--freeze takes all, none or a number of blocks, not '{freeze}'.")
    config = TrainConfig(
        data_dir=args.data_dir,
        backbone=args.backbone,
        weights=args.weights,
        freeze=freeze,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        img_size=args.img_size,
        val_split=args.val_split,
        test_split=args.test_split,
        seed=args.seed,
        device=args.device,
        runs_dir=args.runs_dir,
        augment=args.augment,
        label_smoothing=args.label_smoothing,
        class_balanced=args.class_balanced,
        early_stopping=args.early_stopping,
        layer_decay=args.layer_decay,
        feature_cache=not args.no_feature_cache,
    )
    bar = _ProgressPrinter()
    try:
        summary = train(config, on_event=bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_summary(summary)
    return 0 if summary["status"] in ("finished", "stopped") else 1


def _predict(args) -> int:
    from tl_core.predict import Predictor

    predictor = Predictor.from_run(args.run_dir, device=args.device)
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

    out = export_bundle(args.run_dir, Path(args.out))
    print(f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
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


class _ProgressPrinter:
    """A tqdm bar on stderr that follows the training events."""

    def __init__(self):
        self._bar = None
        self._stage = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "progress" and event["stage"] != self._stage:
            self._new_bar(
                tqdm,
                event["total"],
                {"scan": "Checking images", "decode": "Decoding images", "features": "Backbone features"}.get(
                    event["stage"], event["stage"]
                ),
            )
            self._stage = event["stage"]
        if kind == "progress" and self._bar is not None:
            self._bar.n = event["done"]
            self._bar.refresh()
        elif kind == "start":
            print(
                f"Training {event['backbone']} ({event['weights']} weights) on {event['device_name']}: "
                f"{event['num_train']} training / {event['num_val']} validation images, "
                f"{event['frozen_blocks']}/{event['total_blocks']} blocks frozen, "
                f"{event['trainable_params']:,} of {event['total_params']:,} parameters train.",
                file=sys.stderr,
            )
        elif kind == "step":
            if self._stage != "train":
                self._new_bar(tqdm, event["total_steps"], "Training")
                self._stage = "train"
            self._bar.n = event["step"]
            self._bar.set_postfix(
                epoch=event["epoch"],
                loss=f"{event['loss']:.3f}",
                img_s=f"{event['images_per_second']:.0f}",
                refresh=False,
            )
            self._bar.refresh()
        elif kind == "epoch" and self._bar is not None:
            self._bar.write(
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.3f}, "
                f"val loss {event['val_loss']:.3f}, val accuracy {event['val_accuracy']:.1%}"
                + ("  (best so far, saved)" if event["best"] else ""),
                file=sys.stderr,
            )
        elif kind == "message":
            print(event["text"], file=sys.stderr)

    def _new_bar(self, tqdm, total: int, desc: str) -> None:
        self.close()
        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)

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
