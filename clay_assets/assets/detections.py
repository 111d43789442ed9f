"""``detections`` (per tile x window): a linear probe per label set of ``clay.labels`` scores the
partition's observations; the scores (P(positive)) replace the partition's rows of
``clay.detections`` in one transaction. Each label set's probe is a logistic regression fitted
on its labelled observations at run time (deterministic; ``model_version`` names what it saw),
with precision, recall and AUC on held-out chips in the metadata. Query with
``clay.detections(label_set, min_score)``.
"""

import dagster as dg

from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.partitions import scene_partitions
from clay_assets.resources import ClayHome, VectorDB
from clay_core.heads import score_detections
from clay_core.types import PartitionId
from clay_core.vectordb import DETECTIONS_TABLE, redact


def _probes_md(res) -> str:
    lines = ["| label set | labels +/− | held-out precision | recall | AUC | detected here | model |",
             "|---|---|---|---|---|---|---|"]
    for p in res.probes:
        m = ["–" if v is None else f"{v:.3f}" for v in (p.precision, p.recall, p.auc)]
        lines.append(f"| {p.label_set} | {p.positives}/{p.negatives} | {' | '.join(m)} | "
                     f"{res.detected[p.label_set]} | {p.model_version} |")
    lines += [f"| {name} | skipped: {why} | | | | | |" for name, why in res.skipped.items()]
    return "\n".join(lines)


@dg.asset(
    partitions_def=scene_partitions,
    code_version="detections-1",
    group_name="clay",
    deps=["vectors"],
    description=__doc__,
    backfill_policy=batched_policy(),
)
def detections(context: dg.AssetExecutionContext, home: ClayHome, vectordb: VectorDB) -> dg.MaterializeResult:
    def one(pid: PartitionId) -> PartitionOutcome:
        res = score_detections(home.layout, pid, vectordb.store)
        context.log.info(f"{pid.tile} {pid.window}: {res.rows} scores for {len(res.probes)} label set(s)")
        md = {
            "dagster/row_count": res.rows,
            "observations": res.observations,
            "label_sets": dg.MetadataValue.md(_probes_md(res)),
            "table": DETECTIONS_TABLE,
            "database": redact(vectordb.url()),
        }
        for p in res.probes:  # plottable per set across partitions in the UI
            md.update({f"{p.label_set}/{k}": v for k, v in p.metrics().items() if v is not None})
        return PartitionOutcome(metadata=md)

    return for_each_partition(context, one)
