"""Inference with trained models: docking refinement, benchmark starts and evaluation on complexes.

Plain functions around the networks of :mod:`eqgeo.models`, usable from any script: nothing here
imports :mod:`eqgeo.training` or Lightning, so judging a model needs neither (``eqgeo-evaluate``
and the training tasks call these same functions). Import the submodules directly, e.g.
``from eqgeo.inference.docking import evaluate_docking``.
"""
