"""Small molecules to graphs with RDKit: SMILES (ETKDG conformers), ``Mol`` objects, SDF and MOL2.

Every graph carries the node fields ``z``, ``pos``, ``formal_charge``, ``is_aromatic``,
``hybridization`` and the covalent bonds as ``bond_index`` / ``bond_type``, kept apart from the
radius edges (``edge_index``) that :class:`eqgeo.data.RadiusGraph` adds later. See
:mod:`eqgeo.data.keys` for the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs
from torch_geometric.data import Data

from . import keys as K
from .errors import InvalidInputError, SkipReport

__all__ = [
    "mol_from_smiles",
    "from_smiles",
    "from_rdkit_mol",
    "read_sdf_mols",
    "read_mol2_mols",
    "read_sdf",
    "read_mol2",
]

_HYBRIDIZATION_CODE = {name: code for code, name in enumerate(K.HYBRIDIZATIONS)}
_BOND_CODE = {name: code for code, name in enumerate(K.BOND_TYPES)}


# ------------------------------------------------------------------------------------------
# RDKit Mol -> Data
# ------------------------------------------------------------------------------------------


def _check_conformer(mol: Chem.Mol, conf_id: int, source: str, record) -> torch.Tensor:
    if mol.GetNumConformers() == 0:
        raise InvalidInputError(source, "molecule has no conformer (no 3D coordinates)", record)
    try:
        conf = mol.GetConformer(conf_id)
    except ValueError:
        raise InvalidInputError(source, f"molecule has no conformer with id {conf_id}", record) from None
    if not conf.Is3D():
        raise InvalidInputError(source, "conformer is 2D, not 3D", record)
    pos = torch.from_numpy(conf.GetPositions())
    bad = (~torch.isfinite(pos).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise InvalidInputError(source, f"non-finite (NaN or infinite) coordinates for atoms {bad}", record)
    return pos


def _atomic_numbers(mol: Chem.Mol, source: str, record) -> torch.Tensor:
    z = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    unknown = [i for i, zi in enumerate(z) if zi <= 0]
    if unknown:
        raise InvalidInputError(source, f"unknown element (dummy atom '*' or query atom) at atoms {unknown}", record)
    return torch.tensor(z, dtype=torch.long)


def _bonds(mol: Chem.Mol) -> tuple[torch.Tensor, torch.Tensor]:
    pairs, types = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        code = _BOND_CODE.get(str(bond.GetBondType()), 0)
        pairs += [(i, j), (j, i)]
        types += [code, code]
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.tensor(pairs, dtype=torch.long).t().contiguous(), torch.tensor(types, dtype=torch.long)


def from_rdkit_mol(
    mol: Chem.Mol,
    conf_id: int = -1,
    *,
    source: str | Path = "<rdkit Mol>",
    record: str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Graph of an RDKit molecule with a 3D conformer.

    Args:
        mol: the molecule; hydrogens are kept as they are in ``mol``.
        conf_id: which conformer (``-1``: the default one).
        source: file or origin, named in errors.
        record: record inside ``source``, named in errors.
        dtype: float dtype of ``pos``.

    Returns:
        ``Data`` with ``z``, ``pos``, ``formal_charge``, ``is_aromatic``, ``hybridization``,
        ``bond_index``, ``bond_type`` and ``name`` (the ``_Name`` property, may be empty).

    Raises:
        InvalidInputError: no conformer, a 2D conformer, non-finite coordinates or an unknown
            element.

    Shapes:
        ``pos`` ``(N, 3)``; ``bond_index`` ``(2, B)`` with both directions of each bond.
    """
    if mol is None:
        raise InvalidInputError(source, "RDKit returned no molecule", record)
    source = str(source)
    z = _atomic_numbers(mol, source, record)
    pos = _check_conformer(mol, conf_id, source, record).to(dtype)
    atoms = list(mol.GetAtoms())
    bond_index, bond_type = _bonds(mol)
    data = Data(num_nodes=len(atoms))
    data[K.ATOMIC_NUMBER] = z
    data[K.POSITION] = pos
    data[K.FORMAL_CHARGE] = torch.tensor([a.GetFormalCharge() for a in atoms], dtype=torch.long)
    data[K.IS_AROMATIC] = torch.tensor([a.GetIsAromatic() for a in atoms], dtype=torch.bool)
    data[K.HYBRIDIZATION] = torch.tensor(
        [_HYBRIDIZATION_CODE.get(str(a.GetHybridization()), _HYBRIDIZATION_CODE["OTHER"]) for a in atoms],
        dtype=torch.long,
    )
    data[K.BOND_INDEX] = bond_index
    data[K.BOND_TYPE] = bond_type
    data[K.NAME] = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
    return data


# ------------------------------------------------------------------------------------------
# SMILES
# ------------------------------------------------------------------------------------------


def mol_from_smiles(smiles: str, *, seed: int = 0, optimize: bool = False, add_hydrogens: bool = True) -> Chem.Mol:
    """RDKit molecule with one 3D conformer from ETKDGv3 (seeded), optionally MMFF-optimised.

    Args:
        smiles: the SMILES string.
        seed: random seed of the embedding; the same seed gives the same conformer.
        optimize: run an MMFF94 optimisation after embedding.
        add_hydrogens: add explicit hydrogens before embedding (recommended: ETKDG places them).

    Raises:
        InvalidInputError: invalid SMILES, failed embedding or failed MMFF set-up.
    """
    source = "<smiles>"
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidInputError(source, "invalid SMILES (RDKit could not parse or sanitise it)", smiles)
    if add_hydrogens:
        mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise InvalidInputError(source, f"ETKDG could not embed a 3D conformer (seed {seed})", smiles)
    if optimize:
        if not AllChem.MMFFHasAllMoleculeParams(mol):
            raise InvalidInputError(source, "MMFF94 has no parameters for this molecule", smiles)
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return mol


def from_smiles(
    smiles: str,
    *,
    seed: int = 0,
    optimize: bool = False,
    add_hydrogens: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """Graph of a molecule given as SMILES, with a seeded ETKDG conformer.

    See :func:`mol_from_smiles` for the arguments and :func:`from_rdkit_mol` for the fields;
    the graph also has ``smiles``.

    Example:
        >>> data = from_smiles("CCO", seed=0)
        >>> data.z.tolist()
        [6, 6, 8, 1, 1, 1, 1, 1, 1]
    """
    mol = mol_from_smiles(smiles, seed=seed, optimize=optimize, add_hydrogens=add_hydrogens)
    data = from_rdkit_mol(mol, source="<smiles>", record=smiles, dtype=dtype)
    data[K.SMILES] = smiles
    data[K.NAME] = smiles
    return data


# ------------------------------------------------------------------------------------------
# SDF and MOL2 files
# ------------------------------------------------------------------------------------------


def _sanitize(mol: Chem.Mol, source: str, record: str) -> Chem.Mol:
    try:
        with BlockLogs():
            Chem.SanitizeMol(mol)
    except Exception as error:  # RDKit raises several exception types (valence, kekulize, ...)
        raise InvalidInputError(source, f"RDKit sanitization failed: {error}", record) from None
    return mol


def _finish_mol(mol: Chem.Mol | None, source: str, record: str, sanitize: bool, remove_hydrogens: bool) -> Chem.Mol:
    if mol is None:
        raise InvalidInputError(source, "RDKit could not parse the record", record)
    if sanitize:
        _sanitize(mol, source, record)
    if remove_hydrogens:
        with BlockLogs():
            mol = Chem.RemoveHs(mol, sanitize=sanitize)
    return mol


def _record_name(index: int, mol: Chem.Mol | None) -> str:
    title = mol.GetProp("_Name").strip() if mol is not None and mol.HasProp("_Name") else ""
    return f"{index} ({title})" if title else str(index)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InvalidInputError(path, "file is empty")


def _sdf_records(path: Path) -> Iterator[tuple[int, Chem.Mol | None]]:
    with BlockLogs():
        supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False, strictParsing=True)
        for index in range(len(supplier)):
            yield index, supplier[index]


def _mol2_blocks(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    parts = text.split("@<TRIPOS>MOLECULE")
    return ["@<TRIPOS>MOLECULE" + part for part in parts[1:]]


def _mol2_records(path: Path) -> Iterator[tuple[int, Chem.Mol | None]]:
    blocks = _mol2_blocks(path)
    if not blocks:
        raise InvalidInputError(path, "no @<TRIPOS>MOLECULE record in the file")
    for index, block in enumerate(blocks):
        with BlockLogs():
            yield index, Chem.MolFromMol2Block(block, sanitize=False, removeHs=False)


def _read_mols(records, path: Path, sanitize: bool, remove_hydrogens: bool, skip_invalid: bool, report: SkipReport | None):
    report = SkipReport() if report is None else report
    mols = []
    for index, mol in records:
        record = _record_name(index, mol)
        mol = report.guard(lambda: _finish_mol(mol, str(path), record, sanitize, remove_hydrogens), skip_invalid)
        if mol is not None:
            mols.append((record, mol))
    if not mols and not skip_invalid:
        raise InvalidInputError(path, "no molecule in the file")
    return mols


def read_sdf_mols(
    path: str | Path,
    *,
    sanitize: bool = True,
    remove_hydrogens: bool = False,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
) -> list[tuple[str, Chem.Mol]]:
    """RDKit molecules of every record of an SDF file, as ``(record name, Mol)`` pairs.

    Args:
        path: the ``.sdf`` file.
        sanitize: run RDKit sanitization (aromaticity, hybridisation, valence checks); a record
            that fails it is invalid.
        remove_hydrogens: drop explicit hydrogens.
        skip_invalid: skip invalid records and add them to ``report`` instead of raising.
        report: collects skipped records (a new one if ``None``).

    Raises:
        InvalidInputError: a missing or empty file, an unparsable record or a record that fails
            sanitization (naming the file, the record and RDKit's reason).
    """
    path = Path(path)
    _check_file(path)
    return _read_mols(_sdf_records(path), path, sanitize, remove_hydrogens, skip_invalid, report)


def read_mol2_mols(
    path: str | Path,
    *,
    sanitize: bool = True,
    remove_hydrogens: bool = False,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
) -> list[tuple[str, Chem.Mol]]:
    """RDKit molecules of every record of a Tripos MOL2 file; see :func:`read_sdf_mols`."""
    path = Path(path)
    _check_file(path)
    return _read_mols(_mol2_records(path), path, sanitize, remove_hydrogens, skip_invalid, report)


def _to_graphs(mols, path: Path, skip_invalid: bool, report: SkipReport | None, dtype) -> list[Data]:
    report = SkipReport() if report is None else report
    graphs = []
    for record, mol in mols:
        data = report.guard(lambda: from_rdkit_mol(mol, source=path, record=record, dtype=dtype), skip_invalid)
        if data is not None:
            graphs.append(data)
    return graphs


def read_sdf(
    path: str | Path,
    *,
    sanitize: bool = True,
    remove_hydrogens: bool = False,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Data]:
    """Graphs of every record of an SDF file (see :func:`read_sdf_mols`, :func:`from_rdkit_mol`).

    With ``sanitize=False`` an unsanitizable record still loads, but aromaticity and
    hybridisation are then as written in the file (usually unset).
    """
    report = SkipReport() if report is None else report
    mols = read_sdf_mols(path, sanitize=sanitize, remove_hydrogens=remove_hydrogens, skip_invalid=skip_invalid, report=report)
    return _to_graphs(mols, Path(path), skip_invalid, report, dtype)


def read_mol2(
    path: str | Path,
    *,
    sanitize: bool = True,
    remove_hydrogens: bool = False,
    skip_invalid: bool = False,
    report: SkipReport | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Data]:
    """Graphs of every record of a MOL2 file (see :func:`read_sdf`)."""
    report = SkipReport() if report is None else report
    mols = read_mol2_mols(path, sanitize=sanitize, remove_hydrogens=remove_hydrogens, skip_invalid=skip_invalid, report=report)
    return _to_graphs(mols, Path(path), skip_invalid, report, dtype)
