"""Dagster definitions for Clay Assets: assets, resources, partitions, automation, CLI."""

import warnings

from dagster import BetaWarning

# backfill_policy is "beta" in Dagster 1.13 and we rely on it deliberately (multi_run(1) for
# multi-partitioned assets: single_run() with multi-partitions has open Dagster bugs with
# non-rectangular selections); one notice per asset at every load is noise.
warnings.filterwarnings("ignore", category=BetaWarning)
