"""Test-time docking refinement (``eqgeo.inference.docking.refine``): the old whole-graph loop against
the current one, on Astex complexes, in one process.

    PYTHONPATH=. python experiments/benchmarks/bench_docking_refinement.py \
        [--complexes 8] [--threads 1 2] [--repeat 3] [--steps 6] [--profile]

Workload: the first ``--complexes`` complexes (sorted by name) of the Astex Diverse Set
(``../shared/data/complexes/posebusters_paper_data/astex_diverse_set``), pockets cropped as the
docking experiment does (``conf/experiment/docking.yaml``: ``pocket_radius 8``); the benchmark
starts of both tracks (``benchmark_starts`` with the data config's ``track_a`` / ``track_b``, seed
0: 4 and 8 starts per complex); a ``DockingModel`` of the experiment's size (16 channels, lmax 1,
3 conv layers, full parity, cutoff 5 Å) with seeded random weights (the repository holds no
trained checkpoint), its ``avg_num_neighbors`` and move scales measured on training poses of these
complexes as ``DockingDataModule`` does; float32; ``refine_steps`` 6, ``step_size`` 0.5.

``_refine_reference`` below is ``refine`` as it was before this benchmark (commit 7649246): every
step builds the ``Batch`` of the whole complex graphs, runs ``model(batch)`` (radius graph over
ligand and pocket, every layer on every node) and moves the starts one by one. ``refine`` now
computes the pocket's part of the network once per complex (``FixedPocketForward``) and, per
step, only the ligand's neighbour list and the nodes and messages a pose changes, then moves all
starts at once.

Timed per complex and thread count, old and new interleaved (old, new, old, new, ...), median of
``--repeat``: wall (``time.perf_counter``) and process CPU (``time.process_time``) of ``refine`` on
track (a) and on track (b) (the new one includes building its pocket part each call), of ``refine``
on both tracks' starts at once (what ``evaluate_docking`` now runs per complex), of one forward
pass on the track (b) starts, and of the neighbour search (old: ``radius_graph`` over the batch;
new: the per-pose ligand–ligand and ligand–pocket search). Accuracy: the largest difference
between old and new final poses (Å) and confidences, and the metrics of ``evaluate_docking``
computed from each. The process runs with the settings of eqgeo's console scripts
(``eqgeo.cli.configure_process``: OpenMP threads wait passively, glibc malloc keeps freed blocks),
as ``eqgeo-train``'s test stage does; ``--plain-runtime`` leaves them out.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--plain-runtime" not in sys.argv:
    # the process settings of eqgeo's console scripts (eqgeo-train runs the test-time refinement):
    # OpenMP threads sleep rather than spin while waiting, glibc malloc keeps freed blocks; set before torch loads
    from eqgeo.cli import configure_process

    RUNTIME = configure_process()
else:
    RUNTIME = {}

import torch  # noqa: E402
from torch_geometric.data import Batch  # noqa: E402

from eqgeo.data import keys as K  # noqa: E402
from eqgeo.data.neighbors import radius_graph  # noqa: E402
from eqgeo.data.poses import move_pose, symmetric_rmsd  # noqa: E402
from eqgeo.datasets.docking import load_docking_complexes  # noqa: E402
from eqgeo.models import DockingModel  # noqa: E402
from eqgeo.models.docking import FixedPocketForward  # noqa: E402
from eqgeo.leaderboard import cpu_model  # noqa: E402
from eqgeo.inference.docking import (  # noqa: E402
    SUCCESS_RMSD,
    TRACK_A,
    TRACK_B,
    benchmark_starts,
    pose_graph,
    refine,
)
from eqgeo.training.docking import sample_training_pose  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ASTEX = REPO.parent / "shared" / "data" / "complexes" / "posebusters_paper_data" / "astex_diverse_set"
MODEL = dict(channels=16, lmax=1, num_layers=3, parity="full", layer="conv", cutoff=5.0)  # conf/experiment/docking.yaml


@torch.no_grad()
def _refine_reference(model, c, starts, steps: int = 6, step_size: float = 0.5):
    """``refine`` as of commit 7649246: the whole complex graphs through ``model(batch)`` every step."""
    dtype = model.translation_scale.dtype
    device = model.translation_scale.device
    poses = starts.to(torch.float64).clone()
    T = c.bonds.shape[1]
    for step in range(steps + 1):
        batch = Batch.from_data_list([pose_graph(c, p, dtype) for p in poses]).to(device)
        out = model(batch)
        if step == steps:
            return poses, out["confidence"].double().cpu()
        alpha = 1.0 if step == steps - 1 else step_size
        tr, rot = out["translation"].double().cpu(), out["rotation"].double().cpu()
        tor = out["torsion"].double().cpu().reshape(len(poses), T)
        poses = torch.stack(
            [move_pose(p, c.bonds, c.moving, alpha * tr[s], alpha * rot[s], alpha * tor[s]) for s, p in enumerate(poses)]
        )
    raise AssertionError("unreachable")


def build_model(complexes, seed: int = 0) -> DockingModel:
    """The experiment's model with seeded weights; neighbour count and move scales as DockingDataModule measures them."""
    g = torch.Generator().manual_seed(seed + 1)
    samples = [sample_training_pose(complexes[k % len(complexes)], g, dtype=torch.float64) for k in range(64)]
    neighbours = [radius_graph(d[K.POSITION], MODEL["cutoff"]).shape[1] / d.num_nodes for d in samples]
    rms = lambda key: float(torch.cat([d[key].reshape(-1) for d in samples]).square().mean().sqrt())  # noqa: E731
    torch.manual_seed(seed)
    model = DockingModel(**MODEL, avg_num_neighbors=sum(neighbours) / len(neighbours)).eval()
    model.set_statistics(rms(K.TARGET_TRANSLATION), rms(K.TARGET_ROTATION), rms(K.TARGET_TORSION))
    return model


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def interleaved(fns: dict, repeat: int) -> dict:
    """``{name: (median wall, median cpu)}``, the functions run in turn ``repeat`` times."""
    times = {name: ([], []) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            _, w, c = timed(fn)
            times[name][0].append(w)
            times[name][1].append(c)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}


def new_neighbour_search(f: FixedPocketForward, poses):
    """The per-pose part of the new neighbour search: ligand-ligand and ligand-pocket pairs within the cutoff."""
    exact = poses.to(f.dtype).double()
    d_ll = torch.cdist(exact, exact, compute_mode="donot_use_mm_for_euclid_dist")
    d_lp = torch.cdist(exact, f._pocket64.expand(len(exact), -1, 3), compute_mode="donot_use_mm_for_euclid_dist")
    return ((d_ll > 0) & (d_ll < f.cutoff)).nonzero(), ((d_lp > 0) & (d_lp < f.cutoff)).nonzero()


def metrics(complexes, starts, finals) -> dict:
    """evaluate_docking's model metrics from final poses and confidences ``{(k, track): (poses, confidence)}``."""
    a, b = [], []
    for k, c in enumerate(complexes):
        a += symmetric_rmsd(finals[k, "a"][0], c.references).tolist()
        rmsd = symmetric_rmsd(finals[k, "b"][0], c.references)
        b.append(float(rmsd[finals[k, "b"][1].argmax()]))
    out = {}
    for name, values in (("a_model", a), ("b_model", b)):
        v = torch.tensor(values, dtype=torch.float64)
        out[f"{name}_success"] = 100.0 * float((v < SUCCESS_RMSD).double().mean())
        out[f"{name}_median_rmsd"] = float(v.quantile(0.5))
    return out


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs visible; torch {torch.__version__}"


def checkout() -> str:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout
        except OSError:
            return ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    changed = ", ".join(line[3:] for line in git("status", "--porcelain", "--", "eqgeo").splitlines() if line.strip())
    try:
        from eqgeo.nn import _native

        native = "on" if _native.enabled() else "off"
    except (ImportError, AttributeError):
        native = "n/a"
    return f"commit {commit or 'n/a'}" + (f" + uncommitted: {changed}" if changed else "") + f"; native TP kernel: {native}"


def _relative_paths(text: str) -> str:
    """cProfile names files by absolute path: name them relative to the repository, the installed
    packages and the temporary folder so that the output says nothing about this machine."""
    import site
    import tempfile

    roots = [(str(Path(__file__).resolve().parents[2]) + os.sep, "")]
    roots += [(d.rstrip(os.sep) + os.sep, "<site-packages>/") for d in site.getsitepackages() + [site.getusersitepackages()]]
    roots += [(tempfile.gettempdir().rstrip(os.sep) + os.sep, "<tmp>/")]
    for root, name in sorted(roots, key=lambda r: -len(r[0])):
        text = text.replace(root, name)
    return text


def profile(model, c, starts, steps):
    for name, fn in (("old", _refine_reference), ("new", refine)):
        fn(model, c, starts, steps)
        pr = cProfile.Profile()
        pr.enable()
        fn(model, c, starts, steps)
        pr.disable()
        text = io.StringIO()
        pstats.Stats(pr, stream=text).sort_stats("cumulative").print_stats(25)
        print(f"\n### cProfile of {name} refine, {c.name}, {len(starts)} starts\n```\n{_relative_paths(text.getvalue().strip())}\n```")
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as p:
            fn(model, c, starts, steps)
        table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        print(f"\n### torch.profiler of {name} refine (self CPU)\n```\n{table}\n```")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--complexes", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--pocket-radius", type=float, default=8.0)
    ap.add_argument("--root", default=str(ASTEX))
    ap.add_argument("--cache-dir", default=None, help="complex cache (default: eqgeo's cache)")
    ap.add_argument("--profile", action="store_true", help="cProfile and torch.profiler of one refine, old and new")
    ap.add_argument("--plain-runtime", action="store_true",
                    help="skip eqgeo.cli.configure_process (OpenMP passive waiting, malloc thresholds)")
    args = ap.parse_args()

    ids = sorted(p.name for p in Path(args.root).iterdir() if p.is_dir())[: args.complexes]
    complexes, report = load_docking_complexes(args.root, ids=ids, pocket_radius=args.pocket_radius, skip_invalid=True,
                                               cache_dir=args.cache_dir)
    starts = benchmark_starts(complexes, TRACK_A, TRACK_B, seed=0)
    model = build_model(complexes)
    print(f"# Docking refinement: old (whole graph every step) vs new (FixedPocketForward), {len(complexes)} Astex complexes")
    print(f"machine: {machine()}; {checkout()}")
    print(f"process settings: {RUNTIME or 'none (--plain-runtime, or already set)'}; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"model: {model!r}, avg_num_neighbors {model.interactions.convs[0].avg_num_neighbors:.1f}; pocket_radius "
          f"{args.pocket_radius} Å; {args.steps} steps of size {args.step_size}; median of {args.repeat}, interleaved")
    if len(report):
        print(f"skipped: {report}")

    # accuracy: old and new on every complex and track (at the first thread setting)
    torch.set_num_threads(args.threads[0])
    model64 = build_model(complexes).double()  # the same weights in float64: the float32 noise floor, and exactness
    finals_old, finals_new, rows = {}, {}, []
    for k, c in enumerate(complexes):
        for track in "ab":
            s = starts[track][k]
            finals_old[k, track] = _refine_reference(model, c, s, args.steps, args.step_size)
            finals_new[k, track] = refine(model, c, s, args.steps, args.step_size)
            (po, co), (pn, cn) = finals_old[k, track], finals_new[k, track]
            po64 = _refine_reference(model64, c, s, args.steps, args.step_size)[0]
            pn64 = refine(model64, c, s, args.steps, args.step_size)[0]
            r_old, r_new = symmetric_rmsd(po, c.references), symmetric_rmsd(pn, c.references)
            rows.append((c.name, track, len(s), float((po - pn).abs().max()), float((co - cn).abs().max()),
                         float((r_old - r_new).abs().max()), float((po - po64).abs().max()),
                         float((po64 - pn64).abs().max()), float((po - s).norm(dim=-1).max())))
    print("\n## Accuracy: old vs new final poses\n")
    print("float32 as benchmarked; the float64 columns run the same weights in float64: old float32 vs old float64 is "
          "the float32 round-off of the old code itself, old vs new in float64 shows the new computation is exact.\n")
    print("| complex | track | starts | max abs pose diff old vs new (Å) | max abs confidence diff | max abs RMSD diff (Å) | "
          "old float32 vs old float64 (Å) | old vs new, float64 (Å) | largest move (Å) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, track, S, dp, dc, dr, d32, d64, move in rows:
        print(f"| {name} | {track} | {S} | {dp:.2e} | {dc:.2e} | {dr:.2e} | {d32:.2e} | {d64:.2e} | {move:.2f} |")
    m_old, m_new = metrics(complexes, starts, finals_old), metrics(complexes, starts, finals_new)
    print("\n| metric | old | new |\n|---|---:|---:|")
    for key in m_old:
        print(f"| {key} | {m_old[key]:.4f} | {m_new[key]:.4f} |")

    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n## {threads} thread{'s' * (threads > 1)} (load average at start {loadavg()})\n")
        print("| complex | ligand atoms | pocket atoms | edges per pose (old graph) | edges with a ligand atom per pose | "
              "neighbour search old / new ms | forward (b) old / new ms | refine (a) old / new s | refine (b) old / new s | "
              "refine speed-up (a + b) wall / CPU | evaluate (a and b together) new s | evaluate speed-up wall / CPU |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        total = {name: [0.0, 0.0] for name in ("old_a", "old_b", "new_a", "new_b", "new_ab")}
        for k, c in enumerate(complexes):
            sa, sb = starts["a"][k], starts["b"][k]
            batch = Batch.from_data_list([pose_graph(c, p) for p in sb])
            f = FixedPocketForward(model, c.ligand_z, c.pocket_z, c.pocket_pos, c.bonds)
            edges = radius_graph(batch.pos, model.cutoff, batch.batch).shape[1] / len(sb)
            ll, lp = new_neighbour_search(f, sb)
            lig_edges = (ll.shape[0] + 2 * lp.shape[0]) / len(sb)  # ll: both directions; lp: pairs
            search = interleaved({"old": lambda: radius_graph(batch.pos, model.cutoff, batch.batch),
                                  "new": lambda: new_neighbour_search(f, sb)}, args.repeat)

            def old_forward():
                with torch.no_grad():
                    return model(Batch.from_data_list([pose_graph(c, p) for p in sb]))

            forward = interleaved({"old": old_forward, "new": lambda: f(sb)}, args.repeat)
            both = torch.cat([sa, sb])
            t = interleaved({
                "old_a": lambda: _refine_reference(model, c, sa, args.steps, args.step_size),
                "new_a": lambda: refine(model, c, sa, args.steps, args.step_size),
                "old_b": lambda: _refine_reference(model, c, sb, args.steps, args.step_size),
                "new_b": lambda: refine(model, c, sb, args.steps, args.step_size),
                "new_ab": lambda: refine(model, c, both, args.steps, args.step_size),  # evaluate_docking's call
            }, args.repeat)
            for name in total:
                total[name][0] += t[name][0]
                total[name][1] += t[name][1]
            old = [t["old_a"][i] + t["old_b"][i] for i in (0, 1)]
            new = [t["new_a"][i] + t["new_b"][i] for i in (0, 1)]
            print(f"| {c.name} | {c.ligand_z.numel()} | {c.pocket_z.numel()} | {edges:.0f} | {lig_edges:.0f} | "
                  f"{search['old'][0] * 1e3:.1f} / {search['new'][0] * 1e3:.1f} | "
                  f"{forward['old'][0] * 1e3:.0f} / {forward['new'][0] * 1e3:.0f} | "
                  f"{t['old_a'][0]:.3f} / {t['new_a'][0]:.3f} | {t['old_b'][0]:.3f} / {t['new_b'][0]:.3f} | "
                  f"{old[0] / new[0]:.1f}x / {old[1] / new[1]:.1f}x | {t['new_ab'][0]:.3f} | "
                  f"{old[0] / t['new_ab'][0]:.1f}x / {old[1] / t['new_ab'][1]:.1f}x |", flush=True)
        for i, what in enumerate(("wall", "CPU")):
            old = total["old_a"][i] + total["old_b"][i]
            new = total["new_a"][i] + total["new_b"][i]
            print(f"\ntotal {what} ({len(complexes)} complexes, both tracks): old refine {old:.2f} s; new refine {new:.2f} s "
                  f"({old / new:.1f}x; track a {total['old_a'][i] / total['new_a'][i]:.1f}x, track b "
                  f"{total['old_b'][i] / total['new_b'][i]:.1f}x); new, both tracks in one refine as evaluate_docking "
                  f"runs them, {total['new_ab'][i]:.2f} s ({old / total['new_ab'][i]:.1f}x)")
        print(f"\nload average at end {loadavg()}")

    if args.profile:
        torch.set_num_threads(args.threads[0])
        profile(model, complexes[0], starts["b"][0], args.steps)


if __name__ == "__main__":
    main()
