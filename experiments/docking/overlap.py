"""Overlap between the docking training set (PoseBusters Benchmark pockets) and the Astex test set.

    python experiments/docking/overlap.py [--train DIR] [--test DIR] [--out DIR]

Run from the repository root. The data folders default to ``$EQGEO_SHARED_DATA`` (else
``../shared/data``) + ``complexes/posebusters_benchmark_pockets`` (training, 427 complexes,
proteins cropped to the residues within 10 Å of the ligand) and
``complexes/posebusters_paper_data/astex_diverse_set`` (test, the 60 shared Astex complexes).
Complex folders are found with eqgeo's own :func:`eqgeo.datasets.find_complex_files`, so this
script sees exactly the complexes (and skipped folders) that the docking loaders see. Writes
``experiments/docking/results/overlap.json`` and ``overlap.md``; every path written there is
relative to the repository root.

Checks
------
1. **PDB codes**: the 4-character codes of the folder names (``5S8I_2LY`` -> ``5S8I``) shared by
   the two sets; also against all 85 codes of ``astex_diverse_set_ids.txt`` (the 60 shared
   complexes plus the 25 held out, whose files are not here).
2. **Ligand identity**: the standard InChIKey (RDKit ``MolToInchiKey``) of each crystal ligand
   ``<ID>_ligand.sdf``, read with the hydrogens as in the file (none in either set) and
   sanitised. Two keys are compared: the full key, and its first block (14 characters: the
   InChI main layer, i.e. formula + connectivity; it ignores stereo, charge/protonation and
   isotopes), so a racemate, another protonation state or a mis-assigned stereocentre of the
   same compound still counts. The CCD code of the folder name (``_2LY``) is compared as a
   cross-check only: the same CCD code must give the same connectivity key.
3. **Protein identity**: the amino-acid sequence of every chain (``ATOM`` records only, first
   model, residues in file order, three-letter -> one-letter; common modified residues such as
   MSE -> M mapped to their parent (``PARENT``); other residues with a CA atom -> ``X``;
   ``ATOM`` residues without a CA atom, e.g. GDP written as ATOM, are skipped and counted).
   A chain is cut into *fragments* wherever two residues that follow each other in the file are
   not peptide-bonded (C(i)–N(i+1) > 2.0 Å; if either atom is missing, the residue numbers must
   be consecutive or differ only by an insertion code). Because the PoseBusters proteins are
   pocket crops, their full chains are unknown and no global sequence identity can be computed.
   Instead, the pocket's fragments of at least ``MIN_SEGMENT`` = 5 residues (its *segments*; the
   residues in them are its *testable* residues) are compared by exact 5-residue windows with the
   fragments of each Astex chain (windows never span a chain break). For a (PoseBusters pocket,
   Astex complex) pair:

   ``coverage = testable pocket residues that lie in at least one 5-residue window found
   exactly in a chain of the Astex complex / testable pocket residues``

   i.e. the fraction of the pocket covered by exact common substrings of >= 5 residues. The
   JSON also gives the best single Astex chain's coverage (using all chains counts a pocket at
   a hetero-dimer interface whose two sides match two Astex chains) and ``segment_coverage``, the
   stricter reading in which a whole segment must occur as one exact substring (one point
   mutation then loses the whole segment: the androgen receptor pocket of 7ZU2_DHT against the
   W741L mutant 1Z95_198 has segment coverage 73 % but window coverage 96 %). An Astex complex is
   *protein-overlapping* with a PoseBusters complex when ``coverage >= MIN_COVERAGE`` = 0.8 and
   ``>= MIN_MATCHED`` = 20 residues are matched. Every pair with any matched window is written
   to the JSON with its coverage, so another threshold can be applied.

   Why these thresholds:

   * 5 residues: an exact 5-residue match arises by chance with probability about
     (sum_a p_a^2)^5 ~ 0.06^5 ~ 8e-7 per position (p_a = amino-acid frequencies), i.e. < 1e-3
     per window against an Astex complex of a few hundred distinct residues, so unrelated
     proteins get coverage ~0 (in practice one or two windows, often a conserved motif such as
     a kinase's glycine-rich loop: coverage < 0.2); with 3- or 4-residue windows chance hits
     become common (~0.2 and ~0.01 per window).
   * 80 % coverage: ``calibration`` mutates every pocket at random to a given sequence identity
     and measures its coverage against the original: at 98 % identity 96 % of the pockets reach
     0.8, at 95 % 83 %, at 90 % 54 %, at 80 % 12 %, at 70 % 2 % (table in ``overlap.md``;
     substitutions at uniformly random positions; clustered substitutions, as in real
     proteins, break fewer windows, so a real pocket at a given identity tends to score higher). So the test flags identical or near-identical
     pockets (the same protein, a point mutant, a very close orthologue), which a docking model
     can memorise, and not mere homologues. On the current data the measured coverages are
     bimodal: every flagged pair is >= 0.96, and the next highest are homologues at 0.49–0.56
     (two protein kinases, two serine proteases, two carbonic anhydrases), so any threshold
     between ~0.6 and ~0.95 gives the same answer.
   * 20 matched residues: pockets have a median of 67 testable residues (10th–90th percentile
     36–160), but a small pocket or one made mostly of short stretches has only one or two
     segments (the smallest has 9 testable residues); 80 % of 10 residues is not evidence of the
     same protein, 20 residues in exact >= 5-residue matches is.

   Whether the Astex proteins are whole chains or crops is checked too: for every residue the
   distance from its CA to the nearest heavy atom of any crystal ligand copy (``_ligands.sdf``) is
   computed; in a 10 Å crop no CA can be more than ~18 Å away (10 Å plus the longest side chain,
   Arg/Lys ~7.5 Å), so the fraction of residues beyond 18 Å says which it is (0 for the
   PoseBusters pockets, a check of the crop).

Bad input (a ligand that RDKit cannot read or sanitise, a PDB line that does not parse, a protein
without amino-acid residues) is listed by file name in both outputs and the complex is reported
as "not checked" for that kind of overlap; nothing is dropped silently.

Later scripts can report results with and without the overlapping complexes::

    from experiments.docking.overlap import overlapping_astex_ids   # repository root on sys.path
    drop = overlapping_astex_ids("experiments/docking/results/overlap.json")
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "docking" / "results"
COMMAND = "python experiments/docking/overlap.py"

MIN_SEGMENT = 5  # residues: shortest pocket fragment looked up as an exact substring
MIN_COVERAGE = 0.8  # fraction of the pocket's testable residues found in the Astex complex
MIN_MATCHED = 20  # residues: fewest matched residues for a protein overlap
PEPTIDE_BOND_MAX = 2.0  # Å: C(i)-N(i+1) longer than this is a chain break
CROP_CA_DISTANCE = 18.0  # Å: no CA of a 10 Å crop can be farther than this from the ligand

OVERLAP_KINDS = ("ligand_full", "ligand_connectivity", "protein")

ONE_LETTER = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
    "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
    "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip
#: Modified residues -> the one-letter code of their parent amino acid.
PARENT = {
    "MSE": "M", "SEP": "S", "TPO": "T", "PTR": "Y", "HYP": "P", "CSO": "C", "CSD": "C", "CME": "C",
    "OCS": "C", "CSS": "C", "KCX": "K", "LLP": "K", "MLY": "K", "ALY": "K", "M3L": "K", "MLZ": "K",
    "HIC": "H", "MHS": "H", "AGM": "R", "MGN": "Q", "CGU": "E", "GL3": "G",
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Reusable: which Astex complexes overlap the training set


def overlapping_astex_ids(results_json: str | Path | dict = RESULTS / "overlap.json",
                          kinds: tuple[str, ...] = OVERLAP_KINDS) -> set[str]:
    """Astex complex IDs (e.g. ``1HVY_D16``) that overlap the training set.

    Args:
        results_json: ``overlap.json`` (path, or the loaded dict).
        kinds: which overlaps count, any of ``"ligand_full"`` (same standard InChIKey),
            ``"ligand_connectivity"`` (same first InChIKey block) and ``"protein"`` (pocket
            coverage at the thresholds stored in the file). Default: all three.

    Complexes that could not be checked (unreadable files, listed under ``"unreadable"``) are
    not in the set; :func:`unchecked_astex_ids` names them.
    """
    data = results_json if isinstance(results_json, dict) else json.loads(Path(results_json).read_text())
    unknown = set(kinds) - set(OVERLAP_KINDS)
    if unknown:
        raise ValueError(f"unknown overlap kinds {sorted(unknown)}; choose from {OVERLAP_KINDS}")
    return {c["id"] for c in data["astex"] if any(c["overlap"][k] for k in kinds)}


def unchecked_astex_ids(results_json: str | Path | dict = RESULTS / "overlap.json") -> set[str]:
    """Astex complex IDs for which the ligand or the protein could not be checked."""
    data = results_json if isinstance(results_json, dict) else json.loads(Path(results_json).read_text())
    return {c["id"] for c in data["astex"] if c["inchikey"] is None or not c["protein"]["checked"]}


# --------------------------------------------------------------------------------------------
# Reading


def rel(path: str | Path) -> str:
    """``path`` relative to the repository root (never an absolute path of this machine)."""
    return os.path.relpath(Path(path).resolve(), REPO)


@dataclass
class Residue:
    number: int
    icode: str
    name: str
    letter: str | None  # None: not an amino acid (skipped)
    backbone: dict = field(default_factory=dict)  # "N"/"CA"/"C" -> (x, y, z)


def read_chains(path: Path, error) -> tuple[dict[str, list[Residue]], Counter]:
    """The ATOM residues of each chain of a PDB file, in file order (first model only), and the
    names of the ATOM residues that are not amino acids. ``error(reason)`` builds the exception."""
    chains: dict[str, list[Residue]] = {}
    skipped: Counter = Counter()
    seen, last = set(), None
    with open(path, encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, 1):
            record = line[:6]
            if record == "ENDMDL":
                break
            if record != "ATOM  ":
                continue
            try:
                chain, name, atom = line[21], line[17:20].strip(), line[12:16].strip()
                key = (chain, int(line[22:26]), line[26].strip())
                xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            except (ValueError, IndexError) as exc:
                raise error(f"line {line_no} does not parse as an ATOM record ({exc})") from None
            if key != last:
                if key in seen:  # a residue that already ended (should not happen): ignore its atoms
                    continue
                seen.add(key)
                letter = ONE_LETTER.get(name) or PARENT.get(name)
                chains.setdefault(chain, []).append(Residue(key[1], key[2], name, letter))
                last = key
            residue = chains[chain][-1]
            if atom in ("N", "CA", "C") and atom not in residue.backbone:
                residue.backbone[atom] = xyz
    for residues in chains.values():
        for r in residues:
            if r.letter is None:
                if "CA" in r.backbone:
                    r.letter = "X"
                else:
                    skipped[r.name] += 1
    chains = {c: [r for r in rs if r.letter is not None] for c, rs in chains.items()}
    return {c: rs for c, rs in chains.items() if rs}, skipped


def bonded(a: Residue, b: Residue) -> bool:
    """Whether residue ``b`` follows ``a`` in the chain (peptide bond, else residue numbering)."""
    if "C" in a.backbone and "N" in b.backbone:
        return sum((x - y) ** 2 for x, y in zip(a.backbone["C"], b.backbone["N"])) <= PEPTIDE_BOND_MAX**2
    return b.number == a.number + 1 or (b.number == a.number and b.icode != a.icode)


def fragments(residues: list[Residue]) -> list[str]:
    """One-letter sequences of the chain's unbroken stretches."""
    out, current, prev = [], [], None
    for r in residues:
        if prev is not None and not bonded(prev, r):
            out.append("".join(current))
            current = []
        current.append(r.letter)
        prev = r
    if current:
        out.append("".join(current))
    return out


def ligand_key(path: Path, error) -> tuple[str, object]:
    """Standard InChIKey of the first record of an SDF (hydrogens as in the file), and the mol."""
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    if not path.is_file():
        raise error("file missing")
    with BlockLogs():
        mol = Chem.MolFromMolFile(str(path), removeHs=False, sanitize=True)
        if mol is None:
            raise error("RDKit could not read or sanitise the ligand")
        key = Chem.MolToInchiKey(mol)
    if not key:
        raise error("RDKit produced no InChIKey")
    return key, mol


def ligand_heavy_coords(files, mol) -> list[tuple[float, float, float]]:
    """Heavy-atom coordinates of every crystal copy (``_ligands.sdf``), else of ``_ligand.sdf``."""
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    mols = [mol]
    if files.all_copies is not None:
        with BlockLogs():
            copies = [m for m in Chem.SDMolSupplier(str(files.all_copies), sanitize=False, removeHs=False)]
        if copies and all(m is not None for m in copies):
            mols = copies
    return [tuple(m.GetConformer().GetAtomPosition(a.GetIdx())) for m in mols for a in m.GetAtoms()
            if a.GetAtomicNum() > 1]


def ca_far_fraction(chains: dict[str, list[Residue]], ligand_xyz) -> tuple[int, int, float]:
    """(residues with a CA, of them farther than CROP_CA_DISTANCE from every ligand atom, max CA distance)."""
    import numpy as np

    ca = np.array([r.backbone["CA"] for rs in chains.values() for r in rs if "CA" in r.backbone], dtype=float)
    if not len(ca) or not len(ligand_xyz):
        return len(ca), 0, float("nan")
    lig = np.asarray(ligand_xyz, dtype=float)
    d = np.sqrt(((ca[:, None, :] - lig[None, :, :]) ** 2).sum(-1)).min(1)
    return len(ca), int((d > CROP_CA_DISTANCE).sum()), float(d.max())


def read_set(root: Path, report) -> list[dict]:
    """Every complex folder under ``root`` (eqgeo's discovery) with its ligand keys and chains."""
    from eqgeo.data.errors import InvalidInputError
    from eqgeo.datasets.complexes import find_complex_files

    found, layout_report = find_complex_files(root)
    for e in layout_report.errors:
        report.append({"file": rel(e.source), "kind": "folder", "reason": e.reason})
    out = []
    for files in found:
        entry = {"id": files.name, "pdb": files.name[:4].upper(),
                 "ccd": files.name.split("_", 1)[1] if "_" in files.name else "",
                 "folder": rel(files.protein.parent), "inchikey": None, "chains": {}, "skipped_atom_residues": {},
                 "ca": None}
        ligand = next((p for p in files.ligands if p.suffix == ".sdf"), files.ligands[0])
        mol = None
        try:
            entry["inchikey"], mol = ligand_key(ligand, lambda why, f=ligand: InvalidInputError(rel(f), why))
        except InvalidInputError as e:
            report.append({"file": e.source, "kind": "ligand", "reason": e.reason})
        try:
            chains, skipped = read_chains(files.protein, lambda why, f=files.protein: InvalidInputError(rel(f), why))
            if not chains:
                raise InvalidInputError(rel(files.protein), "no amino-acid residue in the ATOM records")
            entry["chains"] = {c: fragments(rs) for c, rs in chains.items()}
            entry["skipped_atom_residues"] = dict(skipped)
            if mol is not None:
                entry["ca"] = ca_far_fraction(chains, ligand_heavy_coords(files, mol))
        except InvalidInputError as e:
            report.append({"file": e.source, "kind": "protein", "reason": e.reason})
        except OSError as e:
            report.append({"file": rel(files.protein), "kind": "protein", "reason": f"cannot read: {e}"})
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------
# Comparing


def kmers(fragments_: list[str], k: int = MIN_SEGMENT) -> set[str]:
    """Every k-residue window of the fragments (none spans a chain break)."""
    return {f[j:j + k] for f in fragments_ for j in range(len(f) - k + 1)}


def covered_residues(segments: list[str], found: set[str], k: int = MIN_SEGMENT) -> int:
    """Residues of ``segments`` that lie in at least one k-residue window found in ``found``."""
    covered = 0
    for s in segments:
        mask = [False] * len(s)
        for j in range(len(s) - k + 1):
            if s[j:j + k] in found:
                mask[j:j + k] = [True] * k
        covered += sum(mask)
    return covered


def pocket_segments(pocket: dict) -> list[str]:
    """The pocket's unbroken fragments of at least MIN_SEGMENT residues (its testable part)."""
    return [s for frags in pocket["chains"].values() for s in frags if len(s) >= MIN_SEGMENT]


def protein_coverage(pocket: dict, astex: dict, astex_kmers: dict[str, set[str]]) -> dict | None:
    """Coverage of one PoseBusters pocket by one Astex complex's chains (None: nothing matched).

    ``coverage``: residues of the pocket's segments inside an exactly matching 5-residue window
    of any Astex chain / the segments' residues; ``segment_coverage``: the stricter reading,
    residues of the segments found whole as exact substrings of an Astex chain."""
    segments = pocket_segments(pocket)
    testable = sum(map(len, segments))
    union = set().union(*astex_kmers.values())
    matched = covered_residues(segments, union)
    if not testable or not matched:
        return None
    per_chain = {c: covered_residues(segments, km) for c, km in astex_kmers.items()}
    best_chain = max(sorted(per_chain), key=lambda c: per_chain[c])
    seqs = ["/".join(frags) for frags in astex["chains"].values()]
    whole = sum(len(s) for s in segments if any(s in seq for seq in seqs))
    return {
        "posebusters": pocket["id"],
        "coverage": round(matched / testable, 4),
        "matched_residues": matched,
        "testable_residues": testable,
        "pocket_residues": sum(len(f) for frags in pocket["chains"].values() for f in frags),
        "best_chain": best_chain,
        "best_chain_coverage": round(per_chain[best_chain] / testable, 4),
        "segment_coverage": round(whole / testable, 4),
        "overlap": matched / testable >= MIN_COVERAGE and matched >= MIN_MATCHED,
    }


def calibration(pockets: list[dict], identities=(1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.5), seed: int = 0) -> list[dict]:
    """What coverage a pocket gets against a copy of itself with random substitutions at the given
    sequence identity (at uniformly random positions; clustered substitutions, as in real
    proteins, break fewer windows, so a real pocket at that identity tends to score higher).
    Median and 10th/90th percentile over the pockets, for ``coverage`` and ``segment_coverage``."""
    import random

    rng = random.Random(seed)
    letters = sorted(ONE_LETTER.values())
    out = []
    for q in identities:
        cov, seg = [], []
        for p in pockets:
            segments = pocket_segments(p)
            testable = sum(map(len, segments))
            if not testable:
                continue
            mutated = ["".join(a if rng.random() < q else rng.choice([b for b in letters if b != a]) for a in s)
                       for s in segments]
            found = kmers(mutated)
            cov.append(covered_residues(segments, found) / testable)
            seg.append(sum(len(s) for s, m in zip(segments, mutated) if s == m) / testable)
        cov.sort(), seg.sort()
        pick = lambda v, f: v[min(len(v) - 1, int(f * len(v)))]
        out.append({"identity": q, "coverage_median": round(median(cov), 3), "coverage_p10": round(pick(cov, 0.1), 3),
                    "coverage_p90": round(pick(cov, 0.9), 3), "segment_coverage_median": round(median(seg), 3),
                    "fraction_at_threshold": round(sum(c >= MIN_COVERAGE for c in cov) / len(cov), 3)})
    return out


def git_commit() -> tuple[str, bool]:
    """Short HEAD commit, and whether this script is committed unchanged."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", rel(__file__)], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head, not dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def median(values):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def run(train_root: Path, test_root: Path, astex_ids_file: Path | None) -> dict:
    unreadable: list[dict] = []
    train = read_set(train_root, unreadable)
    test = read_set(test_root, unreadable)

    # 1. PDB codes
    train_codes = {c["pdb"] for c in train}
    all_85 = []
    if astex_ids_file is not None:
        try:
            all_85 = sorted({w[:4].upper() for w in astex_ids_file.read_text().split()})
        except OSError as e:
            unreadable.append({"file": rel(astex_ids_file), "kind": "id list", "reason": f"cannot read: {e.strerror}"})
    shared_codes = sorted(train_codes & {c["pdb"] for c in test})
    shared_codes_85 = sorted(train_codes & set(all_85))

    # 2. ligands
    by_key, by_block, by_ccd = {}, {}, {}
    for c in train:
        by_ccd.setdefault(c["ccd"], []).append(c["id"])
        if c["inchikey"]:
            by_key.setdefault(c["inchikey"], []).append(c["id"])
            by_block.setdefault(c["inchikey"][:14], []).append(c["id"])

    # 3. proteins (pockets that could not be read are skipped here and listed under "unreadable")
    pockets = [c for c in train if c["chains"]]
    astex_kmers = {a["id"]: {c: kmers(f) for c, f in a["chains"].items()} for a in test}
    every_kmer = set().union(*(km for per_chain in astex_kmers.values() for km in per_chain.values()))
    # only pockets with a window found in some Astex chain can match (a fast pre-filter)
    candidates = [p for p in pockets if kmers(pocket_segments(p)) & every_kmer]
    astex_entries, train_hits = [], {}
    for a in test:
        key = a["inchikey"]
        pairs = []
        if a["chains"]:
            pairs = [p for p in (protein_coverage(pocket, a, astex_kmers[a["id"]]) for pocket in candidates)
                     if p is not None]
            pairs.sort(key=lambda p: (-p["coverage"], -p["matched_residues"], p["posebusters"]))
        lig_full = sorted(by_key.get(key, [])) if key else []
        lig_block = sorted(by_block.get(key[:14], [])) if key else []
        prot = [p for p in pairs if p["overlap"]]
        n_ca, n_far, max_d = a["ca"] if a["ca"] else (0, 0, float("nan"))
        entry = {
            "id": a["id"], "pdb": a["pdb"], "ccd": a["ccd"], "folder": a["folder"],
            "inchikey": key, "inchikey_connectivity": key[:14] if key else None,
            "ligand_matches_full": lig_full,
            "ligand_matches_connectivity": lig_block,
            "same_ccd_code": sorted(by_ccd.get(a["ccd"], [])),
            "protein": {
                "checked": bool(a["chains"]),
                "chains": {c: {"residues": sum(map(len, f)), "fragments": len(f), "longest_fragment": max(map(len, f))}
                           for c, f in a["chains"].items()},
                "skipped_atom_residues": a["skipped_atom_residues"],
                "ca_residues": n_ca, "ca_beyond_crop_distance": n_far,
                "max_ca_ligand_distance": None if math.isnan(max_d) else round(max_d, 1),
            },
            "protein_matches": prot,
            "protein_coverage_all": pairs,  # every pocket with any matched segment
            "overlap": {"ligand_full": bool(lig_full), "ligand_connectivity": bool(lig_block), "protein": bool(prot)},
        }
        for pb in set(lig_full) | set(lig_block) | {p["posebusters"] for p in prot}:
            train_hits.setdefault(pb, []).append(a["id"])
        astex_entries.append(entry)

    pocket_stats = []
    for c in pockets:
        frags = [f for fs in c["chains"].values() for f in fs]
        total = sum(map(len, frags))
        testable = sum(len(f) for f in frags if len(f) >= MIN_SEGMENT)
        n_ca, n_far, max_d = c["ca"] if c["ca"] else (0, 0, float("nan"))
        pocket_stats.append({"id": c["id"], "residues": total, "testable_residues": testable,
                             "fragments": len(frags), "chains": len(c["chains"]), "ca_beyond_crop_distance": n_far,
                             "max_ca_ligand_distance": None if math.isnan(max_d) else round(max_d, 1)})

    return {
        "train": train, "test": test, "astex": astex_entries, "pocket_stats": pocket_stats,
        "calibration": calibration(pockets),
        "unreadable": unreadable, "shared_codes": shared_codes, "shared_codes_85": shared_codes_85,
        "n_astex_85": len(all_85),
        "train_unchecked": sorted(c["id"] for c in train if c["inchikey"] is None or not c["chains"]),
        "train_hits": {k: sorted(v) for k, v in sorted(train_hits.items())},
    }


# --------------------------------------------------------------------------------------------
# Writing


def summarise(res: dict, train_root: Path, test_root: Path, astex_ids_file: Path | None, seconds: float) -> dict:
    from rdkit import rdBase

    commit, committed = git_commit()
    astex = res["astex"]
    over = {k: sorted(c["id"] for c in astex if c["overlap"][k]) for k in OVERLAP_KINDS}
    any_over = sorted(c["id"] for c in astex if any(c["overlap"].values()))
    unchecked = sorted(c["id"] for c in astex if c["inchikey"] is None or not c["protein"]["checked"])
    clean = sorted(c["id"] for c in astex if c["id"] not in set(any_over) | set(unchecked))
    return {
        "command": COMMAND,
        "commit": commit,
        "script_committed": committed,
        "rdkit": rdBase.rdkitVersion,
        "python": platform.python_version(),
        "run_time_s": round(seconds, 1),
        "train": {"name": "PoseBusters Benchmark set, pocket crops (10 Å)", "root": rel(train_root),
                  "complexes": len(res["train"])},
        "test": {"name": "Astex Diverse Set (shared 60 of 85)", "root": rel(test_root), "complexes": len(res["test"]),
                 "id_list": rel(astex_ids_file) if astex_ids_file else None, "ids_in_list": res["n_astex_85"]},
        "thresholds": {"min_segment": MIN_SEGMENT, "min_coverage": MIN_COVERAGE, "min_matched_residues": MIN_MATCHED,
                       "peptide_bond_max_A": PEPTIDE_BOND_MAX, "crop_ca_distance_A": CROP_CA_DISTANCE},
        "unreadable": res["unreadable"],
        "counts": {
            "shared_pdb_codes": len(res["shared_codes"]),
            "shared_pdb_codes_with_all_85_astex": len(res["shared_codes_85"]),
            "astex_ligand_full": len(over["ligand_full"]),
            "astex_ligand_connectivity": len(over["ligand_connectivity"]),
            "astex_protein": len(over["protein"]),
            "astex_any": len(any_over),
            "astex_unchecked": len(unchecked),
            "posebusters_unchecked": len(res["train_unchecked"]),
            "astex_clean": len(clean),
            "posebusters_involved": len(res["train_hits"]),
        },
        "shared_pdb_codes": res["shared_codes"],
        "shared_pdb_codes_with_all_85_astex": res["shared_codes_85"],
        "overlapping": {**over, "any": any_over},
        "unchecked": unchecked,
        "unchecked_posebusters": res["train_unchecked"],
        "clean_test_subset": clean,
        "posebusters_overlapping_astex": res["train_hits"],
        "coverage_calibration": res["calibration"],
        "astex": astex,
        "posebusters_pockets": [{**s, "inchikey": c["inchikey"]} for s, c in
                                zip(res["pocket_stats"], [c for c in res["train"] if c["chains"]])],
    }


def _fmt_matches(ids: list[str], limit: int = 6) -> str:
    if not ids:
        return "–"
    return ", ".join(ids[:limit]) + (f", … ({len(ids)})" if len(ids) > limit else "")


def markdown(s: dict) -> str:
    th, n, astex = s["thresholds"], s["counts"], s["astex"]
    by_id = {c["id"]: c for c in astex}
    pockets = s["posebusters_pockets"]
    lines = [
        "# Overlap between the docking training set and the Astex test set",
        "",
        f"Command (repository root): `{s['command']}`; commit `{s['commit']}`"
        + ("" if s["script_committed"] else " (the script itself was not committed yet)")
        + f"; RDKit {s['rdkit']}, Python {s['python']}; run time {s['run_time_s']} s (one process, 2-core CPU shared with other work).",
        "",
        f"- Training set: {s['train']['name']}, `{s['train']['root']}`, {s['train']['complexes']} complexes.",
        f"- Test set: {s['test']['name']}, `{s['test']['root']}`, {s['test']['complexes']} complexes "
        f"(`{s['test']['id_list']}` lists {s['test']['ids_in_list']} PDB codes, the 25 held-out included).",
        "- Complex folders found with eqgeo's `find_complex_files`, as the docking loaders find them.",
        "- Full results: `experiments/docking/results/overlap.json`. In Python (repository root on `sys.path`): "
        "`from experiments.docking.overlap import overlapping_astex_ids; "
        "overlapping_astex_ids(\"experiments/docking/results/overlap.json\")` gives the set to leave out "
        "(`kinds=` picks ligand and/or protein overlap).",
        "",
        "## What was checked, and how",
        "",
        "1. **PDB codes** (first 4 characters of the folder name) shared by the two sets, and with all 85 Astex codes.",
        "2. **Ligand identity**: standard InChIKey (RDKit) of each crystal ligand `<ID>_ligand.sdf`, hydrogens as in "
        "the file (none in either set), sanitised; compared in full and by its first block (14 characters, the InChI "
        "main layer: formula + connectivity, no stereo, charge/protonation or isotopes). The CCD code in the folder "
        "name is a cross-check.",
        "3. **Protein identity**: one-letter sequence of every chain from the ATOM records (modified residues mapped "
        "to their parent, other residues with a CA to X), cut into fragments at chain breaks (C(i)–N(i+1) > "
        f"{th['peptide_bond_max_A']} Å). The PoseBusters proteins are 10 Å pocket crops, so no full-chain identity can "
        f"be computed. Instead, a pocket's fragments of ≥ {th['min_segment']} residues (*segments*; their residues are "
        f"the *testable* residues) are compared by exact {th['min_segment']}-residue windows with every Astex chain: "
        "**coverage** of a (pocket, Astex complex) pair = testable pocket residues inside a window found exactly in "
        "a chain of the Astex complex / testable residues. **Protein overlap**: coverage ≥ "
        f"{th['min_coverage']:.0%} and ≥ {th['min_matched_residues']} matched residues. The JSON also has, per pair, "
        "`segment_coverage` (a whole segment must occur as one substring; a point mutation then loses the whole "
        "segment) and the best single chain's coverage; every pair with any matched window is listed "
        "(`protein_coverage_all`), so another threshold can be applied.",
        "",
        f"Why these thresholds (details in the script's docstring): an exact {th['min_segment']}-residue match occurs "
        "by chance with probability ~0.06^5 ≈ 8e-7 per position, so unrelated proteins score ~0 (shorter windows "
        "would give frequent chance hits); the calibration below shows that ≥ 80 % coverage means a pocket sequence "
        "identity of roughly ≥ 90–95 % (same protein, point mutant or very close orthologue: a binding site a "
        "docking model can memorise), not a mere homologue; 20 residues keeps a pocket with one or two short "
        "segments from counting.",
        "",
    ]
    # are the Astex proteins crops?
    chains = [ch for c in astex for ch in c["protein"]["chains"].values()]
    far = [c["protein"]["ca_beyond_crop_distance"] / c["protein"]["ca_residues"] for c in astex if c["protein"]["ca_residues"]]
    pb_far = sum(p["ca_beyond_crop_distance"] for p in pockets)
    if chains and far:
        verdict = ("No: they are whole chains as modelled (every complex has residues that no 10 Å crop could hold)"
                   if min(far) > 0 else "Some may be: at least one complex has no residue beyond the crop distance")
        lines += [
            f"**Are the Astex proteins crops?** {verdict}. {len(chains)} Astex chains, median "
            f"{median([c['residues'] for c in chains])} residues (range {min(c['residues'] for c in chains)}–"
            f"{max(c['residues'] for c in chains)}), median {median([c['fragments'] for c in chains])} unbroken "
            f"fragment(s) per chain, longest fragment median {median([c['longest_fragment'] for c in chains])}; per complex "
            f"a median {median(far):.0%} (min {min(far):.0%}) of the residues have their CA more than "
            f"{th['crop_ca_distance_A']:.0f} Å from every crystal ligand heavy atom, which a 10 Å crop cannot have. "
            f"The PoseBusters pockets: {pb_far} such residues in all {len(pockets)} pockets (the crop checks out); median "
            f"{median([p['residues'] for p in pockets])} residues per pocket (range {min(p['residues'] for p in pockets)}–"
            f"{max(p['residues'] for p in pockets)}), median {median([p['fragments'] for p in pockets])} fragments; "
            f"median {median([p['testable_residues'] for p in pockets])} testable residues (min "
            f"{min(p['testable_residues'] for p in pockets)}), median "
            f"{median([p['testable_residues'] / p['residues'] for p in pockets]):.0%} of the pocket.",
            "",
        ]
    lines += [
        "## Counts",
        "",
        "| check | Astex complexes (of %d) |" % s["test"]["complexes"],
        "|---|---:|",
        f"| PDB code shared with the training set | {n['shared_pdb_codes']} (against all 85 Astex codes: {n['shared_pdb_codes_with_all_85_astex']}) |",
        f"| ligand: same full InChIKey | {n['astex_ligand_full']} |",
        f"| ligand: same connectivity (first InChIKey block) | {n['astex_ligand_connectivity']} |",
        f"| protein: pocket coverage ≥ {th['min_coverage']:.0%} and ≥ {th['min_matched_residues']} residues | {n['astex_protein']} |",
        f"| any of the above | {n['astex_any']} |",
        f"| not checked (unreadable input) | {n['astex_unchecked']} |",
        f"| **clean test subset** (no overlap of any kind) | **{n['astex_clean']}** |",
        "",
        f"PoseBusters complexes involved in some overlap: {n['posebusters_involved']} of {s['train']['complexes']} "
        "(`posebusters_overlapping_astex` in the JSON).",
        "",
        "## Overlapping Astex complexes",
        "",
    ]
    if s["overlapping"]["any"]:
        lines += ["| Astex | ligand: same InChIKey | ligand: same connectivity only | protein: PoseBusters pocket "
                  "(coverage, matched/testable residues, segment coverage) |", "|---|---|---|---|"]
        for cid in s["overlapping"]["any"]:
            c = by_id[cid]
            block_only = [x for x in c["ligand_matches_connectivity"] if x not in c["ligand_matches_full"]]
            prot = [f"{p['posebusters']} ({p['coverage']:.0%}, {p['matched_residues']}/{p['testable_residues']}, "
                    f"{p['segment_coverage']:.0%})" for p in c["protein_matches"]]
            lines.append(f"| {cid} | {_fmt_matches(c['ligand_matches_full'])} | {_fmt_matches(block_only)} | {_fmt_matches(prot, 4)} |")
    else:
        lines.append("None.")
    same_ccd = [c for c in astex if c["same_ccd_code"]]
    lines += ["", "Cross-check by CCD code (same 3-letter ligand code in both sets): "
              + (", ".join(f"{c['id']} ~ {', '.join(c['same_ccd_code'])}" for c in same_ccd) if same_ccd else "none") + "."]
    below = sorted(((p["coverage"], c["id"], p) for c in astex for p in c["protein_coverage_all"] if not p["overlap"]),
                   key=lambda t: (-t[0], t[1], t[2]["posebusters"]))[:6]
    if below:
        lines += ["", "Closest pairs below the thresholds: " + "; ".join(
            f"{cid} ~ {p['posebusters']} {cov:.0%} ({p['matched_residues']}/{p['testable_residues']})" for cov, cid, p in below) + "."]
    # coverage histogram
    best = [max((p["coverage"] for p in c["protein_coverage_all"]), default=0.0) for c in astex if c["protein"]["checked"]]
    pairs = [p["coverage"] for c in astex for p in c["protein_coverage_all"]]
    n_pairs = sum(c["protein"]["checked"] for c in astex) * len(pockets)
    edges = (0.2, 0.4, 0.6, 0.8)
    rows = [("0 (no window found)", n_pairs - len(pairs), sum(v == 0 for v in best)),
            (f"> 0 and < {edges[0]:.0%}", sum(0 < v < edges[0] for v in pairs), sum(0 < v < edges[0] for v in best))]
    rows += [(f"{lo:.0%}–{hi:.0%}", sum(lo <= v < hi for v in pairs), sum(lo <= v < hi for v in best))
             for lo, hi in zip(edges, edges[1:])]
    rows += [(f"≥ {edges[-1]:.0%}", sum(v >= edges[-1] for v in pairs), sum(v >= edges[-1] for v in best))]
    lines += ["", "## Protein coverage distribution", "",
              "| coverage | (pocket, Astex) pairs | Astex complexes, by their best pair |", "|---|---:|---:|"]
    lines += [f"| {label} | {a} | {b} |" for label, a, b in rows]
    small = [f"{c['id']} ~ {p['posebusters']} ({p['matched_residues']})" for c in astex for p in c["protein_coverage_all"]
             if p["coverage"] >= th["min_coverage"] and p["matched_residues"] < th["min_matched_residues"]]
    lines += ["", f"{n_pairs} pairs in all. Pairs with coverage ≥ {th['min_coverage']:.0%} but fewer than "
              f"{th['min_matched_residues']} matched residues: " + (", ".join(small) or "none") + "."]
    lines += ["", "**Calibration** (`calibration()`): every pocket against a copy of itself with random substitutions "
              "at the given sequence identity (at uniformly random positions; clustered substitutions, as in real "
              "proteins, break fewer windows, so a real pocket at that identity tends to score higher):", "",
              "| pocket sequence identity | median coverage (10th–90th pct.) | pockets ≥ %.0f%% | median segment coverage |"
              % (100 * th["min_coverage"]), "|---:|---:|---:|---:|"]
    lines += [f"| {r['identity']:.0%} | {r['coverage_median']:.2f} ({r['coverage_p10']:.2f}–{r['coverage_p90']:.2f}) | "
              f"{r['fraction_at_threshold']:.0%} | {r['segment_coverage_median']:.2f} |" for r in s["coverage_calibration"]]
    lines += ["", f"## Clean test subset ({len(s['clean_test_subset'])} Astex complexes, no overlap of either kind)", "",
              ", ".join(s["clean_test_subset"]) or "none", ""]
    if s["unchecked_posebusters"]:
        lines += [f"Caveat: {len(s['unchecked_posebusters'])} training complex(es) could not be compared in full "
                  "(unreadable ligand or protein, below), so \"clean\" means clean against the others: "
                  + ", ".join(s["unchecked_posebusters"]) + ".", ""]
    lines += ["## Unreadable or skipped input", ""]
    if s["unreadable"]:
        lines += [f"- `{u['file']}` ({u['kind']}): {u['reason']}" for u in s["unreadable"]]
        lines += ["", "Astex complexes not checked because of these: " + (", ".join(s["unchecked"]) or "none") + "."]
    else:
        lines.append("None: every ligand SDF and protein PDB of both sets was read.")
    return "\n".join(lines) + "\n"


def main() -> int:
    shared = Path(os.environ.get("EQGEO_SHARED_DATA", "../shared/data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=shared / "complexes" / "posebusters_benchmark_pockets")
    parser.add_argument("--test", type=Path, default=shared / "complexes" / "posebusters_paper_data" / "astex_diverse_set")
    parser.add_argument("--astex-ids", type=Path,
                        default=shared / "complexes" / "posebusters_paper_data" / "astex_diverse_set_ids.txt")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    res = run(args.train, args.test, args.astex_ids)
    summary = summarise(res, args.train, args.test, args.astex_ids, time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overlap.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "overlap.md").write_text(markdown(summary))
    n = summary["counts"]
    print(f"{summary['test']['complexes']} Astex vs {summary['train']['complexes']} PoseBusters complexes: "
          f"{n['shared_pdb_codes']} shared PDB codes; overlapping Astex complexes: {n['astex_ligand_full']} by InChIKey, "
          f"{n['astex_ligand_connectivity']} by connectivity, {n['astex_protein']} by protein, {n['astex_any']} in all; "
          f"{n['astex_clean']} clean; {len(summary['unreadable'])} unreadable file(s); {summary['run_time_s']} s")
    print(f"wrote {rel(args.out / 'overlap.json')} and {rel(args.out / 'overlap.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
