"""Per-step pods on Kubernetes: swap the executor in clay_assets/definitions.py for this one.

The embeddings step asks for a GPU through the `dagster-k8s/config` tag; other steps stay on
CPU nodes. Requires `pip install dagster-k8s` (not a project dependency: untested here).
"""

from dagster_k8s import k8s_job_executor  # noqa: F401 - documented deployment path

EXECUTOR = k8s_job_executor.configured({"max_concurrent": 8})

# On the embeddings asset:
#   op_tags={"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
