"""Protein–ligand complex graphs: ligand atoms plus the protein pocket around them.

Nodes are the ligand atoms first, then the pocket atoms; ``node_type`` tells them apart. The
ligand keeps its covalent bonds (``bond_index``); ``cross_edge_index`` links ligand and pocket
atoms closer than a cutoff. Pocket HETATM cofactors and metal ions stay as atoms flagged
``is_hetero`` / ``is_metal``. See :mod:`eqgeo.data.keys`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from . import keys as K
from .protein import distance_to_set, is_metal, select_pocket

__all__ = ["complex_graph", "remove_ligand_copies"]

# Node fields that only one side has, and the value the other side gets.
_LIGAND_ONLY = {K.FORMAL_CHARGE: 0, K.IS_AROMATIC: False, K.HYBRIDIZATION: 0}
_PROTEIN_ONLY = {
    K.ATOM_NAME: K.PROTEIN_ATOM_NAMES.index(K.UNKNOWN),
    K.RESIDUE_TYPE: K.RESIDUE_TYPES.index("LIG"),
    K.RESIDUE_ID: -1,
    K.RESIDUE_NUMBER: -1,
    K.CHAIN_ID: -1,
    K.IS_HETERO: False,
    K.PARENT_ATOM: -1,
}


def remove_ligand_copies(protein: Data, ligand_pos: Tensor, tolerance: float = 1.0) -> tuple[Data, int]:
    """Drop HETATM residues that sit on the ligand (a raw PDB entry still holds the ligand).

    A HETATM residue is removed when any of its atoms lies within ``tolerance`` Å of a ligand
    atom; closer than any real contact, so cofactors next to the ligand stay.

    Returns:
        The protein without those residues, and the number of atoms removed.
    """
    close = distance_to_set(protein[K.POSITION], ligand_pos) < tolerance
    hit = close & protein[K.IS_HETERO]
    if not bool(hit.any()):
        return protein, 0
    residues = torch.unique(protein[K.RESIDUE_ID][hit])
    drop = torch.isin(protein[K.RESIDUE_ID], residues) & protein[K.IS_HETERO]
    keep = (~drop).nonzero().flatten()
    kept = protein.subgraph(keep)
    if K.PARENT_ATOM in protein:
        kept[K.PARENT_ATOM] = protein[K.PARENT_ATOM][keep]
    else:
        kept[K.PARENT_ATOM] = keep
    return kept, int(drop.sum())


def _cross_edges(ligand_pos: Tensor, pocket_pos: Tensor, cutoff: float, offset: int) -> Tensor:
    d = torch.cdist(ligand_pos.double(), pocket_pos.double(), compute_mode="donot_use_mm_for_euclid_dist")
    lig, prot = torch.nonzero(d < cutoff, as_tuple=True)
    prot = prot + offset
    # both directions: protein -> ligand, then ligand -> protein
    return torch.cat([torch.stack([prot, lig]), torch.stack([lig, prot])], dim=1)


def _node_field(key: str, ligand: Data, pocket: Data, fill) -> Tensor:
    """``key`` of ligand nodes then pocket nodes; a side without the field gets ``fill``."""
    have = [side[key] for side in (ligand, pocket) if key in side]
    dtype = have[0].dtype if have else torch.tensor(fill).dtype
    parts = [side[key].to(dtype) if key in side else torch.full((side.num_nodes,), fill, dtype=dtype) for side in (ligand, pocket)]
    return torch.cat(parts)


def complex_graph(
    protein: Data,
    ligand: Data,
    *,
    pocket_radius: float = 10.0,
    cross_cutoff: float = 5.0,
    whole_residues: bool = False,
    ligand_copy_tolerance: float = 1.0,
    pocket_around: Tensor | None = None,
) -> Data:
    """Graph of a protein–ligand complex: ligand atoms and the protein pocket around them.

    Args:
        protein: a graph from :func:`eqgeo.data.read_pdb` (the whole protein).
        ligand: a graph from :func:`eqgeo.data.read_sdf` / :func:`~eqgeo.data.read_mol2` /
            :func:`~eqgeo.data.from_rdkit_mol`, in the protein's frame.
        pocket_radius: protein atoms within this distance (Å) of any ligand atom form the
            pocket (default 10 Å).
        cross_cutoff: ligand and pocket atoms closer than this (Å) are linked by cross edges.
        whole_residues: extend the pocket to whole residues.
        ligand_copy_tolerance: HETATM residues with an atom this close (Å) to a ligand atom
            are the ligand itself (raw PDB entries keep it) and are removed; the number of
            atoms removed is stored as ``num_removed_ligand_atoms``.
        pocket_around: positions ``(M, 3)`` to crop the pocket and find ligand copies around
            instead of the ligand's (e.g. the crystal pose when ``ligand`` is a docking start
            conformer placed elsewhere).

    Returns:
        ``Data`` with the node fields of both sides (``node_type`` 0 for ligand, 1 for protein;
        ligand atoms get ``residue_type`` ``"LIG"`` and ``-1`` residue/chain numbers, protein
        atoms get formal charge 0, not aromatic, ``UNSPECIFIED`` hybridisation), the ligand
        ``bond_index`` / ``bond_type``, ``cross_edge_index`` and ``num_ligand_atoms``.

    Shapes:
        ``pos`` ``(L + P, 3)``; ``bond_index`` ``(2, B)`` within ``0..L-1``;
        ``cross_edge_index`` ``(2, 2C)``.
    """
    ligand_pos = ligand[K.POSITION]
    site = ligand_pos if pocket_around is None else pocket_around
    protein, removed = remove_ligand_copies(protein, site, ligand_copy_tolerance)
    parents = protein[K.PARENT_ATOM] if K.PARENT_ATOM in protein else None
    pocket = select_pocket(protein, site, pocket_radius, whole_residues=whole_residues)
    if parents is not None:  # number pocket atoms in the file's protein, not the de-duplicated one
        pocket[K.PARENT_ATOM] = parents[pocket[K.PARENT_ATOM]]
    num_ligand = ligand.num_nodes
    data = Data(num_nodes=num_ligand + pocket.num_nodes)
    data[K.ATOMIC_NUMBER] = torch.cat([ligand[K.ATOMIC_NUMBER], pocket[K.ATOMIC_NUMBER]])
    data[K.POSITION] = torch.cat([ligand_pos, pocket[K.POSITION].to(ligand_pos.dtype)])
    data[K.NODE_TYPE] = torch.cat(
        [torch.full((num_ligand,), K.NODE_LIGAND), torch.full((pocket.num_nodes,), K.NODE_PROTEIN)]
    )
    for key, fill in {**_LIGAND_ONLY, **_PROTEIN_ONLY}.items():
        data[key] = _node_field(key, ligand, pocket, fill)
    data[K.IS_METAL] = is_metal(data[K.ATOMIC_NUMBER])
    data[K.BOND_INDEX] = ligand[K.BOND_INDEX]
    data[K.BOND_TYPE] = ligand[K.BOND_TYPE]
    data[K.CROSS_EDGE_INDEX] = _cross_edges(ligand_pos, pocket[K.POSITION], cross_cutoff, num_ligand)
    data[K.NUM_LIGAND_ATOMS] = num_ligand
    data[K.NUM_REMOVED_LIGAND] = removed
    data[K.NAME] = protein[K.NAME]
    return data
