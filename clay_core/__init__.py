"""Clay Assets core library: scenes, chips, Clay embeddings, change scores, pgvector.

This package never imports Dagster; ``clay_assets`` wraps it in software-defined assets.
"""

__version__ = "0.1.0"
