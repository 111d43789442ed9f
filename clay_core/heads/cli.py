"""Command line: train a head on the synthetic world and print the metric table.

    python -m clay_core.heads.cli --help
    python -m clay_core.heads.cli                       # segmentation, default settings
    python -m clay_core.heads.cli --head classification
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone

import torch

from clay_core.encoder import build_encoder, file_sha256, load_encoder, model_id
from clay_core.heads.checkpoint import encoder_identity, save_head
from clay_core.heads.data import make_targets, source_chips
from clay_core.heads.labels import SyntheticLabels
from clay_core.heads.metrics import MetricReport
from clay_core.heads.modules import HEAD_TYPES
from clay_core.heads.train import CLASS_WEIGHTINGS, TrainConfig, train_head
from clay_core.sources.synthetic import SyntheticSceneSource, SyntheticWorld

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m clay_core.heads.cli",
        description="Train a head on a frozen Clay encoder over the synthetic world (spatial hold-out by tile) "
                    "and print per-epoch validation metrics and the final metric table.",
    )
    d = TrainConfig()
    ap.add_argument("--head", choices=HEAD_TYPES, default=d.head)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--hidden", type=int, default=d.hidden)
    ap.add_argument("--channels", type=int, default=d.channels)
    ap.add_argument("--class-weights", type=float, nargs="+", default=None, help="one loss weight per class")
    ap.add_argument("--class-weighting", choices=CLASS_WEIGHTINGS, default=d.class_weighting,
                    help="weights from training label counts (unless --class-weights)")
    ap.add_argument("--seed", type=int, default=d.seed, help="head initialisation and batch order")
    ap.add_argument("--world-seed", type=int, default=0, help="synthetic world seed")
    ap.add_argument("--no-cache", action="store_true", help="run the encoder in every epoch (no feature cache)")
    ap.add_argument("--preset", default="tiny", help="encoder preset (seeded random weights unless --checkpoint)")
    ap.add_argument("--checkpoint", default=None, help="encoder checkpoint file")
    ap.add_argument("--tiles", nargs="+", default=["31UFU", "32UNB", "31TCJ"])
    ap.add_argument("--val-tiles", nargs="+", default=["31TCJ"])
    ap.add_argument("--size", type=int, default=256, help="synthetic world size in px")
    ap.add_argument("--chip-size", type=int, default=64)
    ap.add_argument("--weeks", type=int, default=8, help="weekly acquisitions from 2024-01-01")
    ap.add_argument("--save", default=None, help="write the head checkpoint here")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tiles = tuple(t.upper() for t in args.tiles)
    world = SyntheticWorld(tiles=tiles, size=args.size, seed=args.world_seed)
    source = SyntheticSceneSource(world)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    chips = source_chips(source, tiles, start, start + timedelta(weeks=args.weeks), args.chip_size)
    labels = SyntheticLabels(source)
    targets = make_targets(args.head, labels, chips)
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, args.preset)
        sha = file_sha256(args.checkpoint)
    else:
        encoder = build_encoder(args.preset, seed=0)
        sha = None
    mid = model_id(args.preset, args.checkpoint, 0)
    cfg = TrainConfig(head=args.head, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      class_weights=args.class_weights, class_weighting=args.class_weighting, val_tiles=args.val_tiles, seed=args.seed,
                      cache_features=not args.no_cache, hidden=args.hidden, channels=args.channels)
    print(f"# {args.head} head on {mid}: {len(chips)} chips of {args.chip_size} px from {len(tiles)} tiles x "
          f"{args.weeks} weeks (synthetic world {args.size} px); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    res = train_head(encoder, chips, targets, labels.class_names, cfg, log=lambda m: print(m, flush=True))
    print()
    print(f"train tiles {res.train_tiles} ({res.n_train} chips), validation tiles {res.val_tiles} ({res.n_val} chips)")
    print(f"feature cache: {res.cache_seconds:.1f} s once; training: {res.seconds_per_epoch:.2f} s/epoch "
          f"(mean of {cfg.epochs})")
    print()
    print(res.history_md())
    print()
    print(f"final validation metrics (held-out tiles {res.val_tiles}):")
    print()
    print(res.final.table_md())
    if isinstance(res.final, MetricReport):
        print()
        print(res.final.confusion_md())
    if args.save:
        path = save_head(args.save, res, encoder=encoder_identity(encoder, args.preset, mid, sha),
                         chip_size=chips.chip_size, bands=chips.bands, platform=chips.platform)
        print(f"\nsaved {path}")
    if args.json:
        print(json.dumps({"head": args.head, "untrained": res.untrained.headline, "final": res.final.to_dict(),
                          "seconds_per_epoch": res.seconds_per_epoch, "cache_seconds": res.cache_seconds,
                          "n_train": res.n_train, "n_val": res.n_val, "total_seconds": time.perf_counter() - t0},
                         default=float))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
