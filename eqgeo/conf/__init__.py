"""Hydra configs of eqgeo-train (also at the repository root as conf/, a link here)."""
