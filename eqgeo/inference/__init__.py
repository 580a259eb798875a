"""Inference with trained eqgeo models: reading checkpoints, evaluating them, docking.

Plain functions around the networks of :mod:`eqgeo.models`, usable from any script: nothing here
imports :mod:`eqgeo.training` or Lightning, so judging or using a trained model needs neither
(``eqgeo-evaluate``, the calculator and the training tasks call these same functions). Import
the submodules directly, e.g. ``from eqgeo.inference.checkpoint import load_model`` or
``from eqgeo.inference.docking import evaluate_docking``.
"""
