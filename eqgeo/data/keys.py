"""The schema of eqgeo graphs: every ``Data`` field name, its shape, dtype and unit.

Every converter, dataset, model, task and experiment reads field names from here, never from a
string literal. A graph is a :class:`torch_geometric.data.Data`; ``N`` is its number of
nodes (atoms or residues), ``E`` its number of radius edges, ``B`` its number of bond edges
(each bond counted twice, once per direction), ``T`` the number of targets.

Units: lengths in Å, energies in eV, forces in eV/Å (datasets convert on load; see
:mod:`eqgeo.data.units`). Energies are stored in float64: an ethanol total energy of about
-4,200 eV has a float32 resolution of 0.5 meV, as large as the errors models are judged on.

Edge convention (fixed for the whole project, PyG's ``source_to_target`` flow):
``edge_index[0]`` is the neighbour ``j`` (source), ``edge_index[1]`` the centre ``i``
(target), and the edge vector points from the centre to the neighbour,

.. math::
    \\vec r_{ij} = x_j + S_{ij} \\cdot \\text{cell} - x_i,

with ``S_ij = shifts[e]`` the integer cell vector of the neighbour's periodic image (zero and
absent for non-periodic graphs). :func:`eqgeo.data.edge_vectors` computes it.

Fields whose name contains ``"index"`` are node indices: PyG increments them by the number of
nodes when it batches graphs. Residue and chain numbers are therefore called ``*_id``, not
``*_index``, so batching leaves them untouched.

==================== ============================= ========= =====================================
constant             field                         dtype     shape / meaning
==================== ============================= ========= =====================================
Node fields
---------------------------------------------------------------------------------------------------
ATOMIC_NUMBER        ``z``                         long      ``(N,)`` atomic number
POSITION             ``pos``                       float     ``(N, 3)`` Cartesian position, Å
FORMAL_CHARGE        ``formal_charge``             long      ``(N,)`` formal charge, e
IS_AROMATIC          ``is_aromatic``               bool      ``(N,)`` RDKit aromaticity
HYBRIDIZATION        ``hybridization``             long      ``(N,)`` code into :data:`HYBRIDIZATIONS`
FORCES               ``forces``                    float     ``(N, 3)`` force, eV/Å
ATOM_NAME            ``atom_name``                 long      ``(N,)`` code into :data:`PROTEIN_ATOM_NAMES`
RESIDUE_TYPE         ``residue_type``              long      ``(N,)`` code into :data:`RESIDUE_TYPES`
RESIDUE_ID           ``residue_id``                long      ``(N,)`` residue number 0, 1, ... in file order
RESIDUE_NUMBER       ``residue_number``            long      ``(N,)`` PDB author residue number (resSeq)
CHAIN_ID             ``chain_id``                  long      ``(N,)`` chain number 0, 1, ... (letters in CHAIN_NAMES)
IS_HETERO            ``is_hetero``                 bool      ``(N,)`` PDB HETATM record (cofactor, ion, ...)
IS_METAL             ``is_metal``                  bool      ``(N,)`` metal element (:data:`METALS`)
NODE_TYPE            ``node_type``                 long      ``(N,)`` :data:`NODE_LIGAND` or :data:`NODE_PROTEIN`
PARENT_ATOM          ``parent_atom``               long      ``(N,)`` atom number in the uncropped protein
Edge fields
---------------------------------------------------------------------------------------------------
EDGE_INDEX           ``edge_index``                long      ``(2, E)`` radius edges, ``[source j, centre i]``
SHIFTS               ``shifts``                    long      ``(E, 3)`` integer cell shift of the source image
BOND_INDEX           ``bond_index``                long      ``(2, B)`` covalent bonds, both directions
BOND_TYPE            ``bond_type``                 long      ``(B,)`` code into :data:`BOND_TYPES`
CROSS_EDGE_INDEX     ``cross_edge_index``          long      ``(2, C)`` ligand–protein pairs by distance, both directions
ROTATABLE_BOND_INDEX ``rotatable_bond_index``      long      ``(2, T)`` rotatable bonds once, ``[fixed side i, moving side j]``
Graph fields
---------------------------------------------------------------------------------------------------
CELL                 ``cell``                      float     ``(1, 3, 3)`` lattice vectors as rows, Å
PBC                  ``pbc``                       bool      ``(1, 3)`` periodic along each cell vector
ENERGY               ``energy``                    float64   ``(1,)`` total energy, eV
ENERGY_REFERENCE     ``energy_ref``                float64   ``(1,)`` sum of isolated-atom energies, eV
CHARGE               ``charge``                    float     ``(1,)`` total charge of the molecule, e
TARGET               ``y``                         float64   ``(1, T)`` regression targets (dataset documents units)
NAME                 ``name``                      str       record name (file stem, QM9 id, PDB id)
SMILES               ``smiles``                    str       SMILES, when known
CHAIN_NAMES          ``chain_names``               str       chain letters in ``chain_id`` order, e.g. ``"HL"``
MOLECULE_INDEX       ``idx``                       long      ``(1,)`` index of the molecule in its source (QM9 number)
NUM_LIGAND_ATOMS     ``num_ligand_atoms``          int       complexes: ligand atoms are nodes ``0..num_ligand_atoms-1``
NUM_REMOVED_LIGAND   ``num_removed_ligand_atoms``  int       complexes: HETATM atoms removed as copies of the ligand
LIGAND_FILE          ``ligand_file``               str       complexes: the ligand file the graph was built from
LAYOUT               ``layout``                    str       complexes: ``"posebusters"`` or ``"pdbbind"``
Docking training poses (a ligand pose moved from a known one; the targets undo the moves)
---------------------------------------------------------------------------------------------------
TARGET_TRANSLATION   ``target_translation``        float     ``(1, 3)`` translation back to the known pose, Å
TARGET_ROTATION      ``target_rotation``           float     ``(1, 3)`` rotation vector back (about the centroid), rad
TARGET_TORSION       ``target_torsion``            float     ``(T,)`` torsion changes back, rad, in ``(-π, π]``
POSE_RMSD            ``rmsd``                      float     ``(1,)`` symmetry-corrected RMSD to the crystal, Å
CONFIDENCE_TARGET    ``label``                     float     ``(1,)`` 1 if ``rmsd`` is below the success threshold, else 0
==================== ============================= ========= =====================================

Batching turns graph fields into ``(num_graphs, ...)``: ``cell`` becomes ``(num_graphs, 3, 3)``
and ``energy`` becomes ``(num_graphs,)``.
"""

from __future__ import annotations

__all__ = [
    "ATOMIC_NUMBER",
    "POSITION",
    "FORMAL_CHARGE",
    "IS_AROMATIC",
    "HYBRIDIZATION",
    "FORCES",
    "ATOM_NAME",
    "RESIDUE_TYPE",
    "RESIDUE_ID",
    "RESIDUE_NUMBER",
    "CHAIN_ID",
    "IS_HETERO",
    "IS_METAL",
    "NODE_TYPE",
    "PARENT_ATOM",
    "EDGE_INDEX",
    "SHIFTS",
    "BOND_INDEX",
    "BOND_TYPE",
    "CROSS_EDGE_INDEX",
    "ROTATABLE_BOND_INDEX",
    "CELL",
    "PBC",
    "ENERGY",
    "ENERGY_REFERENCE",
    "CHARGE",
    "TARGET",
    "NAME",
    "SMILES",
    "CHAIN_NAMES",
    "MOLECULE_INDEX",
    "NUM_LIGAND_ATOMS",
    "NUM_REMOVED_LIGAND",
    "LIGAND_FILE",
    "LAYOUT",
    "TARGET_TRANSLATION",
    "TARGET_ROTATION",
    "TARGET_TORSION",
    "POSE_RMSD",
    "CONFIDENCE_TARGET",
    "BATCH",
    "NODE_LIGAND",
    "NODE_PROTEIN",
    "HYBRIDIZATIONS",
    "BOND_TYPES",
    "RESIDUE_TYPES",
    "PROTEIN_ATOM_NAMES",
    "METALS",
    "UNKNOWN",
]

# --- node fields -------------------------------------------------------------------------
ATOMIC_NUMBER = "z"
POSITION = "pos"
FORMAL_CHARGE = "formal_charge"
IS_AROMATIC = "is_aromatic"
HYBRIDIZATION = "hybridization"
FORCES = "forces"
ATOM_NAME = "atom_name"
RESIDUE_TYPE = "residue_type"
RESIDUE_ID = "residue_id"
RESIDUE_NUMBER = "residue_number"
CHAIN_ID = "chain_id"
IS_HETERO = "is_hetero"
IS_METAL = "is_metal"
NODE_TYPE = "node_type"
PARENT_ATOM = "parent_atom"

# --- edge fields -------------------------------------------------------------------------
EDGE_INDEX = "edge_index"
SHIFTS = "shifts"
BOND_INDEX = "bond_index"
BOND_TYPE = "bond_type"
CROSS_EDGE_INDEX = "cross_edge_index"
ROTATABLE_BOND_INDEX = "rotatable_bond_index"

# --- graph fields ------------------------------------------------------------------------
CELL = "cell"
PBC = "pbc"
ENERGY = "energy"
ENERGY_REFERENCE = "energy_ref"
CHARGE = "charge"
TARGET = "y"
NAME = "name"
SMILES = "smiles"
CHAIN_NAMES = "chain_names"
MOLECULE_INDEX = "idx"
NUM_LIGAND_ATOMS = "num_ligand_atoms"
NUM_REMOVED_LIGAND = "num_removed_ligand_atoms"
LIGAND_FILE = "ligand_file"
LAYOUT = "layout"
BATCH = "batch"

# --- docking training poses ----------------------------------------------------------------
TARGET_TRANSLATION = "target_translation"
TARGET_ROTATION = "target_rotation"
TARGET_TORSION = "target_torsion"
POSE_RMSD = "rmsd"
CONFIDENCE_TARGET = "label"

# --- vocabularies --------------------------------------------------------------------------
UNKNOWN = "UNK"

NODE_LIGAND = 0
NODE_PROTEIN = 1

#: ``hybridization`` codes, in this order (RDKit ``HybridizationType`` names).
HYBRIDIZATIONS = ("UNSPECIFIED", "S", "SP", "SP2", "SP3", "SP3D", "SP3D2", "OTHER")

#: ``bond_type`` codes, in this order (``OTHER`` covers dative, zero-order, ...).
BOND_TYPES = ("OTHER", "SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")

#: ``residue_type`` codes: the 20 standard amino acids, then unknown/non-standard residues
#: (cofactors, ions, modified residues), then ligand atoms of a complex graph.
RESIDUE_TYPES = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
    UNKNOWN, "LIG",
)  # fmt: skip

#: ``atom_name`` codes: the 37 heavy-atom names of the standard amino acids (AlphaFold's
#: atom37 order), then unknown (hydrogens, cofactor atoms, ligand atoms).
PROTEIN_ATOM_NAMES = (
    "N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2",
    "ND1", "ND2", "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1",
    "OE2", "CH2", "NH1", "NH2", "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT",
    UNKNOWN,
)  # fmt: skip

#: Atomic numbers flagged ``is_metal``: alkali, alkaline-earth, transition, post-transition
#: metals, lanthanides and actinides.
METALS = frozenset(
    [3, 4, 11, 12, 13, 19, 20, 31, 37, 38, 49, 50, 55, 56, 81, 82, 83, 87, 88]
    + list(range(21, 31))
    + list(range(39, 49))
    + list(range(57, 81))
    + list(range(89, 113))
)
