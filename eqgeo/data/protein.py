"""Protein PDB files to graphs: atom-level, residue-level (C-alpha) and binding-pocket crops.

The PDB reader parses the fixed columns of ``ATOM`` / ``HETATM`` records itself (no structure
library): the first model only, the first alternate location of each atom, hydrogens and
waters dropped unless asked for. HETATM records (cofactors, metal ions, modified residues) stay
as atoms flagged ``is_hetero`` (and ``is_metal`` for metals). See :mod:`eqgeo.data.keys`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from ase.data import atomic_numbers as _ASE_ATOMIC_NUMBERS
from torch import Tensor
from torch_geometric.data import Data

from . import keys as K
from .errors import InvalidInputError

__all__ = ["read_pdb", "residue_graph", "select_pocket", "distance_to_set", "is_metal", "WATER_NAMES"]

#: Residue names treated as water.
WATER_NAMES = frozenset({"HOH", "WAT", "DOD", "H2O", "TIP", "TIP3", "SOL"})

_RESIDUE_CODE = {name: code for code, name in enumerate(K.RESIDUE_TYPES)}
_ATOM_NAME_CODE = {name: code for code, name in enumerate(K.PROTEIN_ATOM_NAMES)}
_ELEMENTS = {symbol.upper(): z for symbol, z in _ASE_ATOMIC_NUMBERS.items() if z > 0}
_ELEMENTS["D"] = 1  # deuterium


@dataclass
class _Atoms:
    """Columns of the kept atom records, filled line by line."""

    z: list = field(default_factory=list)
    pos: list = field(default_factory=list)
    atom_name: list = field(default_factory=list)
    residue_type: list = field(default_factory=list)
    residue_id: list = field(default_factory=list)
    residue_number: list = field(default_factory=list)
    chain_id: list = field(default_factory=list)
    is_hetero: list = field(default_factory=list)
    chains: dict = field(default_factory=dict)
    residue_key: tuple | None = None
    seen: set = field(default_factory=set)


def _element(line: str, name_field: str, path: Path, line_no: int) -> int:
    symbol = line[76:78].strip() if len(line) >= 78 else ""
    if not symbol:
        # PDB convention: a one-letter element sits in column 14, so column 13 is blank or a digit
        first = name_field[0]
        symbol = name_field[1] if (first == " " or first.isdigit()) else name_field[:2].strip()
    z = _ELEMENTS.get(symbol.upper().strip("0123456789+-"))
    if z is None:
        raise InvalidInputError(path, f"unknown element {symbol!r} (atom name {name_field.strip()!r})", f"line {line_no}")
    return z


def _coordinates(line: str, path: Path, line_no: int) -> tuple[float, float, float]:
    if len(line.rstrip("\r\n")) < 54:
        raise InvalidInputError(path, f"truncated {line[:6].strip()} record: {len(line.rstrip())} characters, coordinates need 54", f"line {line_no}")
    try:
        xyz = float(line[30:38]), float(line[38:46]), float(line[46:54])
    except ValueError:
        raise InvalidInputError(path, f"unreadable coordinates {line[30:54]!r}", f"line {line_no}") from None
    if not all(map(math.isfinite, xyz)):
        raise InvalidInputError(path, f"non-finite coordinates {xyz}", f"line {line_no}")
    return xyz


def _residue_number(line: str, path: Path, line_no: int) -> int:
    try:
        return int(line[22:26])
    except ValueError:
        raise InvalidInputError(path, f"unreadable residue number {line[22:26]!r}", f"line {line_no}") from None


def _add_atom(atoms: _Atoms, line: str, path: Path, line_no: int, include_hydrogens: bool, keep_water: bool) -> None:
    residue_name = line[17:20].strip()
    if residue_name in WATER_NAMES and not keep_water:
        return
    name_field = line[12:16]
    z = _element(line, name_field, path, line_no)
    if z == 1 and not include_hydrogens:
        return
    chain, number, insertion = line[21], _residue_number(line, path, line_no), line[26]
    atom_key = (chain, number, insertion, residue_name, name_field)
    if line[16] != " " and atom_key in atoms.seen:
        return  # a further alternate location of an atom already kept
    atoms.seen.add(atom_key)
    xyz = _coordinates(line, path, line_no)
    residue_key = (chain, number, insertion, residue_name)
    if residue_key != atoms.residue_key:
        atoms.residue_key = residue_key
        atoms.residue_id.append((atoms.residue_id[-1] + 1) if atoms.residue_id else 0)
    else:
        atoms.residue_id.append(atoms.residue_id[-1])
    hetero = line.startswith("HETATM")
    atoms.z.append(z)
    atoms.pos.append(xyz)
    atoms.atom_name.append(_ATOM_NAME_CODE.get(name_field.strip(), _ATOM_NAME_CODE[K.UNKNOWN]) if z != 1 else _ATOM_NAME_CODE[K.UNKNOWN])
    atoms.residue_type.append(_RESIDUE_CODE[K.UNKNOWN] if hetero else _RESIDUE_CODE.get(residue_name, _RESIDUE_CODE[K.UNKNOWN]))
    atoms.residue_number.append(number)
    atoms.chain_id.append(atoms.chains.setdefault(chain, len(atoms.chains)))
    atoms.is_hetero.append(hetero)


def _parse_pdb(path: Path, include_hydrogens: bool, keep_water: bool) -> _Atoms:
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    atoms = _Atoms()
    with path.open(errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.startswith("ENDMDL"):
                break  # first model only
            if line.startswith(("ATOM  ", "HETATM")):
                _add_atom(atoms, line, path, line_no, include_hydrogens, keep_water)
    if not atoms.z:
        raise InvalidInputError(path, "no ATOM/HETATM records (empty or not a PDB file)")
    return atoms


def read_pdb(
    path: str | Path,
    *,
    include_hydrogens: bool = False,
    keep_water: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Atom-level graph of a protein PDB file (no edges; add them with ``RadiusGraph``).

    Args:
        path: the ``.pdb`` file.
        include_hydrogens: keep hydrogen (and deuterium) atoms.
        keep_water: keep water molecules (:data:`WATER_NAMES`).
        dtype: float dtype of ``pos``.

    Returns:
        ``Data`` with ``z``, ``pos``, ``atom_name``, ``residue_type``, ``residue_id``,
        ``residue_number``, ``chain_id``, ``is_hetero``, ``is_metal``, ``name`` (file stem)
        and ``chain_names``.

    Raises:
        InvalidInputError: missing or empty file, no atom records, a truncated record,
            unreadable numbers or an unknown element (naming the line).

    Shapes:
        ``pos`` ``(N, 3)``; every other node field ``(N,)``.
    """
    path = Path(path)
    atoms = _parse_pdb(path, include_hydrogens, keep_water)
    z = torch.tensor(atoms.z, dtype=torch.long)
    data = Data(num_nodes=len(atoms.z))
    data[K.ATOMIC_NUMBER] = z
    data[K.POSITION] = torch.tensor(atoms.pos, dtype=torch.float64).to(dtype)
    data[K.ATOM_NAME] = torch.tensor(atoms.atom_name, dtype=torch.long)
    data[K.RESIDUE_TYPE] = torch.tensor(atoms.residue_type, dtype=torch.long)
    data[K.RESIDUE_ID] = torch.tensor(atoms.residue_id, dtype=torch.long)
    data[K.RESIDUE_NUMBER] = torch.tensor(atoms.residue_number, dtype=torch.long)
    data[K.CHAIN_ID] = torch.tensor(atoms.chain_id, dtype=torch.long)
    data[K.IS_HETERO] = torch.tensor(atoms.is_hetero, dtype=torch.bool)
    data[K.IS_METAL] = is_metal(z)
    data[K.NAME] = path.stem
    data[K.CHAIN_NAMES] = "".join(atoms.chains)
    return data


def is_metal(z: Tensor) -> Tensor:
    """Boolean mask of the atomic numbers in :data:`eqgeo.data.keys.METALS`."""
    return torch.isin(z, torch.tensor(sorted(K.METALS), dtype=z.dtype, device=z.device))


def residue_graph(protein: Data) -> Data:
    """Residue-level graph: one node per standard amino acid at its C-alpha atom.

    HETATM residues and residues without a C-alpha atom are not nodes.

    Args:
        protein: a graph from :func:`read_pdb`.

    Returns:
        ``Data`` with ``pos`` (C-alpha), ``residue_type``, ``residue_id``, ``residue_number``,
        ``chain_id``, ``parent_atom`` (the C-alpha's atom number in ``protein``), ``name`` and
        ``chain_names``.
    """
    is_ca = (
        (protein[K.ATOM_NAME] == _ATOM_NAME_CODE["CA"])
        & (protein[K.ATOMIC_NUMBER] == 6)
        & ~protein[K.IS_HETERO]
    )
    index = is_ca.nonzero().flatten()
    data = Data(num_nodes=index.numel())
    data[K.POSITION] = protein[K.POSITION][index]
    for key in (K.RESIDUE_TYPE, K.RESIDUE_ID, K.RESIDUE_NUMBER, K.CHAIN_ID):
        data[key] = protein[key][index]
    data[K.PARENT_ATOM] = index
    data[K.NAME] = protein[K.NAME]
    data[K.CHAIN_NAMES] = protein[K.CHAIN_NAMES]
    return data


def distance_to_set(pos: Tensor, targets: Tensor, chunk: int = 4096) -> Tensor:
    """Distance from each point of ``pos`` to the nearest point of ``targets`` (chunked).

    Shapes:
        pos ``(N, 3)``; targets ``(M, 3)``; output ``(N,)``.
    """
    if targets.numel() == 0:
        return torch.full((pos.shape[0],), float("inf"), dtype=torch.float64)
    targets = targets.detach().to(torch.float64)
    parts = []
    for start in range(0, pos.shape[0], chunk):
        block = pos[start : start + chunk].detach().to(torch.float64)
        parts.append(torch.cdist(block, targets, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def select_pocket(protein: Data, ligand_pos: Tensor, radius: float = 10.0, *, whole_residues: bool = False) -> Data:
    """The protein atoms within ``radius`` Å of any ligand atom.

    Args:
        protein: a graph from :func:`read_pdb` (HETATM cofactors and ions are kept when close).
        ligand_pos: ligand atom positions, ``(M, 3)``.
        radius: pocket radius, Å (default 10).
        whole_residues: keep every atom of a residue that has at least one atom in the pocket.

    Returns:
        The node-induced sub-graph, with ``parent_atom`` giving each atom's number in
        ``protein``.
    """
    keep = distance_to_set(protein[K.POSITION], ligand_pos) < radius
    if whole_residues:
        # residue ids are consecutive from 0, so a bincount marks the residues that are hit
        hit = torch.bincount(protein[K.RESIDUE_ID][keep], minlength=int(protein[K.RESIDUE_ID].max()) + 1) > 0
        keep = hit[protein[K.RESIDUE_ID]]
    index = keep.nonzero().flatten()
    pocket = protein.subgraph(index)
    pocket[K.PARENT_ATOM] = index
    return pocket
