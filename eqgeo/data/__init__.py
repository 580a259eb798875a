"""Chemistry files to PyG graphs: the data schema, converters and neighbour lists.

* :mod:`eqgeo.data.keys` – the one schema of ``Data`` field names (read it first).
* molecules (RDKit): :func:`from_smiles`, :func:`from_rdkit_mol`, :func:`read_sdf`, :func:`read_mol2`.
* structures (ASE): :func:`read_xyz`, :func:`read_structures`, :func:`from_ase_atoms`.
* proteins: :func:`read_pdb`, :func:`residue_graph`, :func:`select_pocket`.
* complexes: :func:`complex_graph`.
* ligand poses (docking): :mod:`eqgeo.data.poses` – rotatable bonds, torsion and rigid moves,
  :func:`symmetric_rmsd`.
* neighbour lists: :func:`radius_graph`, :func:`periodic_radius_graph`, :func:`edge_vectors`, :class:`RadiusGraph`.
* bad input: :class:`InvalidInputError`, and :class:`SkipReport` for ``skip_invalid=True``.
"""

from . import keys, poses, units
from .complex import complex_graph, remove_ligand_copies
from .errors import InvalidInputError, SkipReport
from .molecule import (
    from_rdkit_mol,
    from_smiles,
    mol_from_smiles,
    read_mol2,
    read_mol2_mols,
    read_sdf,
    read_sdf_mols,
)
from .poses import rotatable_bonds, symmetric_rmsd
from .neighbors import (
    BACKENDS,
    RadiusGraph,
    available_backends,
    edge_vectors,
    periodic_radius_graph,
    radius_graph,
    resolve_backend,
)
from .protein import distance_to_set, is_metal, read_pdb, residue_graph, select_pocket
from .structures import from_ase_atoms, read_structures, read_xyz

__all__ = [
    "keys",
    "poses",
    "units",
    "rotatable_bonds",
    "symmetric_rmsd",
    "InvalidInputError",
    "SkipReport",
    "from_smiles",
    "mol_from_smiles",
    "from_rdkit_mol",
    "read_sdf",
    "read_sdf_mols",
    "read_mol2",
    "read_mol2_mols",
    "from_ase_atoms",
    "read_structures",
    "read_xyz",
    "read_pdb",
    "residue_graph",
    "select_pocket",
    "distance_to_set",
    "is_metal",
    "complex_graph",
    "remove_ligand_copies",
    "BACKENDS",
    "RadiusGraph",
    "available_backends",
    "edge_vectors",
    "radius_graph",
    "periodic_radius_graph",
    "resolve_backend",
]
