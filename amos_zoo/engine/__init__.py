"""amos-zoo."""
