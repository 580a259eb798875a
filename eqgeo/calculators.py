"""ASE calculator around :class:`~eqgeo.models.InteratomicPotential` (an integration at the edge).

:class:`EqgeoCalculator` lets ASE drive an eqgeo potential: geometry optimisation, molecular
dynamics (:mod:`ase.md`), phonons, equations of state. It turns an :class:`ase.Atoms` into the
graph the model reads (``z``, ``pos`` and, for periodic structures, ``cell`` and ``pbc``) and
lets the model build its own neighbour list at its cutoff, with periodic images, exactly as in
training. Nothing in :mod:`eqgeo.models` imports ASE; this module is the only place that does.

Units are ASE's and the models' (eqgeo's datasets convert on load): energies in eV, forces in
eV/Å, stress in eV/Å^3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Data

from .data import keys as K
from .inference.checkpoint import WEIGHTS, read_checkpoint
from .models import InteratomicPotential

__all__ = ["EqgeoCalculator", "CHECKPOINT_WEIGHTS"]

#: Weight sets :meth:`EqgeoCalculator.from_checkpoint` can load from a run trained with an
#: exponential moving average (``trainer.ema_decay``): ``"ema"`` the averaged weights (Lightning's
#: ``state_dict``), ``"raw"`` the optimiser's weights (``current_model_state``).
CHECKPOINT_WEIGHTS = WEIGHTS


def _formula(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


class EqgeoCalculator(Calculator):
    r"""ASE calculator of an eqgeo :class:`~eqgeo.models.InteratomicPotential`.

    Properties: ``energy`` and ``free_energy`` (equal: the model has no electronic entropy, eV),
    ``energies`` (per-atom energies, eV), ``forces`` :math:`-\partial E / \partial \mathbf{r}_i`
    (eV/Å) and, for cells periodic in all three directions, ``stress`` (eV/Å^3, ASE's Voigt
    order ``xx, yy, zz, yz, xz, xy``),

    .. math::

        \sigma = \frac{1}{V} \frac{\partial E}{\partial \epsilon},

    the derivative with respect to a symmetric strain :math:`\epsilon` of cell and positions,
    which is ASE's sign (positive under tension, ``-virial / V``; equal to
    :func:`ase.calculators.fd.calculate_numerical_stress`). Structures periodic in one or two
    directions get energies and forces (with periodic images); their stress is refused.

    The model builds the neighbour list itself (:func:`eqgeo.data.radius_graph` at its cutoff)
    on every call, so atoms may move arbitrarily far between calls.

    Args:
        model: the potential. It is switched to eval mode and, when ``device`` / ``dtype`` are
            given, moved in place (as :meth:`torch.nn.Module.to` does).
        device: where to evaluate (``None``: where the model is).
        dtype: floating-point dtype of weights and positions (``None``: the model's). Energies
            are float64 either way; molecular dynamics wants float64 forces for tight
            energy conservation.
        **kwargs: :class:`ase.calculators.calculator.Calculator` arguments (``label``, ``atoms``, ...).

    Raises:
        ValueError: (on calculation) atoms of an element the model was not trained on.

    Example:
        >>> import torch
        >>> from ase.build import molecule
        >>> from eqgeo.models import InteratomicPotential
        >>> model = InteratomicPotential([1, 6, 8], channels=4, lmax=1, num_layers=1, cutoff=4.0)
        >>> atoms = molecule("CH3CH2OH")
        >>> atoms.calc = EqgeoCalculator(model, dtype=torch.float64)
        >>> atoms.get_forces().shape
        (9, 3)
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: InteratomicPotential,
        *,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
        **kwargs,
    ) -> None:
        if not isinstance(model, InteratomicPotential):
            raise TypeError(f"EqgeoCalculator needs an eqgeo.models.InteratomicPotential, got {type(model).__name__}")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        super().__init__(**kwargs)
        self.model = model.to(device=device, dtype=dtype).eval()
        #: Where the weights came from (set by :meth:`from_checkpoint`): path, weight set, epoch, step.
        self.source: dict = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, Path],
        device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float64,
        weights: str = "ema",
        **kwargs,
    ) -> "EqgeoCalculator":
        """A calculator of the potential in a checkpoint written by ``eqgeo-train`` (``EnergyForcesTask``).

        The model is rebuilt from the checkpoint's record: its ``_target_`` and arguments
        (architecture, species, ``avg_num_neighbors``). Its ``model.*`` weights are then loaded,
        energy statistics included. The file is read by :func:`eqgeo.inference.checkpoint.read_checkpoint`
        with ``torch.load(..., weights_only=True)`` only, so no pickled code runs.

        Which weights: runs with ``trainer.ema_decay`` (the default) train with Lightning's
        ``EMAWeightAveraging``, which writes the averaged weights as the checkpoint's
        ``state_dict`` and the optimiser's own as ``current_model_state``. Validation (and so
        the choice of ``best.ckpt``) runs on the averaged weights, so ``weights="ema"`` (the
        default) loads those, as do the test metrics ``eqgeo-train`` writes to ``metrics.json``;
        ``weights="raw"`` loads the optimiser's (without EMA both are the ``state_dict``).

        Buffers (species table, energy shifts and scales, ``avg_num_neighbors``) are constants
        of the training data, never trained, and are taken from the raw state. ``eqgeo-train``
        averages no buffers; checkpoints written before it did so have truncated integer buffers
        in the averaged ``state_dict`` (with ``ema_decay=0.9`` carbon's 6 stored as 5).

        Args:
            path: a ``.ckpt`` file (``<run dir>/checkpoints/best.ckpt`` or ``last.ckpt``).
            device: where to evaluate.
            dtype: dtype of weights and positions (float64 for molecular dynamics).
            weights: one of :data:`CHECKPOINT_WEIGHTS`.
            **kwargs: passed to :class:`EqgeoCalculator` (ASE calculator arguments).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: unreadable or corrupt file, not an ``eqgeo-train`` checkpoint, a
                checkpoint of another task (``PropertyTask``) or network (a PyG baseline), or
                weights that do not fit the model its record describes.

        Example::

            calc = EqgeoCalculator.from_checkpoint("runs/2025-01-01/12-00-00/checkpoints/best.ckpt")
            atoms.calc = calc
        """
        if weights not in CHECKPOINT_WEIGHTS:
            raise ValueError(f"weights must be one of {CHECKPOINT_WEIGHTS}, got {weights!r}")
        checkpoint = read_checkpoint(path)
        if checkpoint.kind != "energy":
            task = checkpoint.task["_target_"].rsplit(".", 1)[-1]
            targets = f" (targets {list(checkpoint.task['targets'])})" if "targets" in checkpoint.task else ""
            raise ValueError(
                f"checkpoint {checkpoint.path} is a {task} checkpoint{targets}: EqgeoCalculator needs an interatomic "
                "potential trained on energies and forces (eqgeo-train experiment=rmd17, task=energy_forces)"
            )
        model = checkpoint.build_model(weights)
        if not isinstance(model, InteratomicPotential):
            raise ValueError(
                f"checkpoint {checkpoint.path} holds a {checkpoint.model['_target_']} network; EqgeoCalculator runs "
                "eqgeo's InteratomicPotential (eqgeo-train model=conv or model=transformer)"
            )
        calc = cls(model, device=device, dtype=dtype, **kwargs)
        calc.source = {
            "checkpoint": str(checkpoint.path),
            "weights": weights if checkpoint.trained_with_ema else "state_dict (trained without EMA)",
            "epoch": checkpoint.contents.get("epoch"),
            "global_step": checkpoint.contents.get("global_step"),
        }
        return calc

    # ------------------------------------------------------------------ calculation
    @property
    def species(self) -> list[int]:
        """Atomic numbers the model was trained on."""
        return self.model.embedding.species

    def check_species(self, atoms) -> None:
        """Raise ``ValueError`` naming the elements of ``atoms`` that the model was not trained on."""
        unknown = sorted(set(int(z) for z in atoms.numbers) - set(self.species))
        if unknown:
            raise ValueError(
                f"the atoms contain {_formula(unknown)}, which the model was not trained on; "
                f"its species are {_formula(self.species)}"
            )

    def graph(self, atoms) -> Data:
        """The model's input for ``atoms``: ``z``, ``pos`` and, when periodic, ``cell`` and ``pbc``."""
        p = next(self.model.parameters())
        data = Data(num_nodes=len(atoms))
        data[K.ATOMIC_NUMBER] = torch.as_tensor(atoms.numbers, dtype=torch.long, device=p.device)
        data[K.POSITION] = torch.as_tensor(atoms.positions, dtype=p.dtype, device=p.device)
        if atoms.pbc.any():
            data[K.CELL] = torch.as_tensor(atoms.cell.array, dtype=p.dtype, device=p.device).unsqueeze(0)
            data[K.PBC] = torch.as_tensor(atoms.pbc, dtype=torch.bool, device=p.device).unsqueeze(0)
        return data

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Fill ``self.results`` for ``atoms`` (ASE's calculator protocol; use ``atoms.get_*``)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.check_species(atoms)
        fully_periodic = bool(atoms.pbc.all())
        if "stress" in properties and not fully_periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; these atoms have pbc={atoms.pbc.tolist()}"
            )
        compute_forces = "forces" in properties or "stress" in properties
        with torch.no_grad():  # the model enables autograd for the derivatives itself
            out = self.model(self.graph(atoms), compute_forces=compute_forces,
                             compute_stress=compute_forces and fully_periodic)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["atomic_energy"].detach().cpu().numpy().astype(np.float64),
        }
        if "forces" in out:
            self.results["forces"] = out["forces"].detach().cpu().numpy().astype(np.float64)
        if "stress" in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().cpu().numpy().astype(np.float64))

    def __repr__(self) -> str:
        p = next(self.model.parameters())
        return f"{type(self).__name__}({self.model!r}, device={p.device}, dtype={p.dtype})"
