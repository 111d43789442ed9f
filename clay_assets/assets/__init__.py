"""One asset (or tight family) per module; each module docstring is the asset description."""
