"""`nudiff augment DATA --out OUT`: the whole chain on a researcher's own labeled images."""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.augment import DEFAULT_CONFIG, DEFAULT_FROM
from nudiff.data.formats import PAIR_FORMATS
from nudiff.utils import NudiffError, module_doc, set_threads

EXAMPLES = """\
examples:
  nudiff augment my_labels --out runs/mine                       \
(a quarter of the images held out to score)
  nudiff augment my_labels --test my_test --out runs/mine        \
(score on a separate labeled folder)
  nudiff augment my_labels --out runs/mine --scratch             \
(train the image model from scratch, not fine-tune the shipped one)
  nudiff augment my_labels --out runs/mine --folds 4             \
(very few images: each held out once, 5 chains)
  nudiff augment my_labels --out runs/mine --format hovernet --set segment.train.steps=1500
  nudiff data convert --geojson exports/ --slide slides/ --out my_labels   (QuPath exports first)
then:
  nudiff segment predict --model runs/mine/segmenter --images new_images/ --out runs/pred
  nudiff segment predict --model runs/mine/segmenter --slide slides/case7.svs --out runs/case7
Run the same command again to resume after a stop.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "augment",
        help="your labeled images -> a segmenter trained with synthetic pairs, and whether they "
        "helped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Your own few labeled H&E images (a paired folder: images/ + labels/ instance "
        "maps) -> a segmenter trained on them plus synthetic pairs painted on their labels, and a "
        "real-only one at the same budget, both scored on held-out images.\n\n"
        + (module_doc("nudiff.augment.pipeline") or ""),
        epilog=EXAMPLES,
    )
    p.add_argument(
        "data", type=Path, help="paired folder: images/<name> + labels/<name> (instance maps)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument(
        "--test",
        type=Path,
        default=None,
        help="a labeled folder to score on (default: hold images of DATA out)",
    )
    p.add_argument(
        "--hold-out",
        type=int,
        default=None,
        metavar="N",
        help="images of DATA held out for scoring (default: a quarter, at least 1; 0 with --test)",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="k-fold evaluation (very few images): each image held out once, then the chain on "
        "all images gives the segmenters (K + 1 chains; not with --test / --hold-out)",
    )
    p.add_argument(
        "--from",
        dest="from_model",
        type=Path,
        default=DEFAULT_FROM,
        metavar="MODEL",
        help="the shipped model whose image model is fine-tuned (default: models/kumar-f0.10 "
        "when present; benchmarks/results/fine-tune/ measured it as good as training from scratch "
        "in a fifth of the minutes)",
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="train the image model from scratch on your images instead of fine-tuning",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="budgets (configs/augment.yaml)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set segment.train.steps=1500 (repeatable)",
    )
    p.add_argument(
        "--format",
        choices=PAIR_FORMATS,
        default="png",
        help="format of the pairs written to OUT/pairs",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    p.set_defaults(func=_cmd)


def _cmd(args) -> None:
    from nudiff.augment.folds import augment_folds
    from nudiff.augment.pipeline import AugmentLayout, augment

    set_threads(args.threads)
    chain = dict(
        from_model=None if args.scratch else args.from_model,
        config=args.config,
        overrides=args.set,
        pair_format=args.format,
    )
    if args.folds is not None:
        if args.test is not None or args.hold_out is not None:
            raise NudiffError("--folds holds every image out once: not with --test or --hold-out")
        print(augment_folds(args.data, args.out, args.folds, **chain).read_text())
        layout = AugmentLayout(args.out)
    else:
        layout = augment(args.data, args.out, args.test, args.hold_out, **chain)
        table = layout.report / "table.md"
        if table.exists():
            print(table.read_text().split("\n\n")[0])
    page = layout.report / "index.html"
    print(
        f"segmenter: {layout.segmenter}\nreal-only: {layout.segmenter_real_only}\n"
        f"pairs: {layout.pairs}\nreport: {page if page.exists() else layout.report / 'table.md'}"
    )
