"""One set of checks every model of eqgeo.models passes (NequIP's ``BasicModelTestsMixin`` idea).

A test class mixes in :class:`ModelTestsMixin` and says how to build its model and graphs and
how each output transforms; every check then runs for that model in float32 and float64.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch_geometric.data import Batch, Data

from eqgeo.data import radius_graph
from eqgeo.testing import assert_equivariant

GRAPH, NODE, EDGE = "graph", "node", "edge"


def permute_graph(data: Data, perm: torch.Tensor, index_keys) -> Data:
    """``data`` with its nodes reordered (new node ``i`` = old node ``perm[i]``), indices relabelled."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out = data.clone()
    for key, value in data.items():
        if key in index_keys:
            out[key] = inv[value]
        elif isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == data.num_nodes:
            out[key] = value[perm]
    return out


class ModelTestsMixin:
    """Subclasses set:

    - ``outputs``: ``{key: (level, irreps)}``, level one of ``"graph"``, ``"node"``, ``"edge"``
      (per index pair, e.g. per rotatable bond), irreps how the output transforms (``"0e"``,
      ``"1o"``, ``"1e"``, ``"0o"``; ``"3x1o"`` for ``(N, 3, 3)`` vectors, flattened);
    - ``index_keys``: fields holding node indices besides ``edge_index``;
    - ``statistics``: names of the model's normalisation buffers;
    - ``make_model(dtype)``: a small model in ``dtype``, in eval mode;
    - ``make_graphs(dtype)``: a list of small graphs;
    - ``compile_target(model, data)``: ``(fn, args)``, the plain-tensor part that
      ``torch.compile(fullgraph=True)`` must capture;
    - ``extra_atom(data, pos)`` where the default does not fit: ``data`` with one more atom at ``pos``
      (for the cutoff test); by default a hydrogen added to a molecule's ``z`` and ``pos``.
    """

    outputs: dict = {}
    #: absolute floor of the equivariance check per dtype (see ``assert_equivariant``'s ``atol``),
    #: for a model whose outputs are much smaller than its features at initialisation
    equivariance_atol: dict = {}
    index_keys: tuple = ()
    statistics: tuple = ()
    cutoff = 3.0

    # -------------------------------------------------------------- helpers
    def run(self, model, data) -> dict:
        return model(data)

    def extra_atom(self, data, pos):
        return Data(z=torch.cat([data.z, torch.tensor([1])]), pos=torch.cat([data.pos, pos[None]]))

    @staticmethod
    def flat(value: torch.Tensor) -> torch.Tensor:
        """``(n, ...)`` as ``(n, features)`` for the irreps checks."""
        return value.reshape(value.shape[0], -1) if value.dim() > 1 else value[:, None]

    def with_edges(self, data: Data) -> Data:
        data = data.clone()
        data.edge_index = radius_graph(data.pos, self.cutoff, getattr(data, "batch", None))
        return data

    # -------------------------------------------------------------- checks
    def check_equivariance(self, dtype, tol, corrupt=None) -> dict:
        """:func:`assert_equivariant` of every output, each judged on its own scale.

        ``corrupt(outputs)`` may alter the outputs first (the negative controls use it)."""
        model = self.make_model(dtype)
        data = self.with_edges(Batch.from_data_list(self.make_graphs(dtype)))
        keys = list(self.outputs)

        def f(pos):
            d = data.clone()
            d.pos = pos
            out = self.run(model, d)
            if corrupt is not None:
                out = corrupt(dict(out))
            return tuple(self.flat(out[k]) for k in keys)

        specs = [self.outputs[k][1] for k in keys]
        atol = self.equivariance_atol.get(dtype, 0.0)
        return assert_equivariant(f, [data.pos], ["cartesian_points"], specs, tolerance=tol, atol=atol, ntrials=2)

    def test_equivariance(self, dtype, tol):
        """Outputs transform by their irreps under rotations, reflections and translations."""
        errors = self.check_equivariance(dtype, tol)
        assert set(errors) == {"rotation", "reflection", "translation"}

    def test_permutation(self, dtype, tol):
        """Relabelling the atoms permutes node outputs and leaves the others unchanged."""
        model = self.make_model(dtype)
        data = self.with_edges(Batch.from_data_list(self.make_graphs(dtype)))
        perm = torch.randperm(data.num_nodes)
        out = self.run(model, data)
        moved = self.run(model, permute_graph(data, perm, ("edge_index", *self.index_keys)))
        for key, (level, _) in self.outputs.items():
            expected = out[key][perm] if level == NODE else out[key]
            torch.testing.assert_close(moved[key], expected, atol=tol, rtol=0, msg=f"output {key!r}")

    def test_batch_equals_graphs_one_by_one(self, dtype, tol):
        model = self.make_model(dtype)
        graphs = self.make_graphs(dtype)
        batched = self.run(model, Batch.from_data_list(graphs))
        single = [self.run(model, g) for g in graphs]
        for key in self.outputs:
            torch.testing.assert_close(
                batched[key], torch.cat([s[key] for s in single]), atol=tol, rtol=0, msg=f"output {key!r}"
            )

    def test_continuous_at_cutoff(self):
        """No jump when an atom crosses the cutoff of its only neighbour.

        Outputs at distances ``c - 3d, c - d, c + d, c + 3d``: the step across the cutoff equals the
        mean of the steps on either side up to ``O(d^2)`` (outputs such as a dipole move with the
        atom itself, so they are not constant, but a jump would show here).
        """
        model = self.make_model(torch.float64)
        data = self.make_graphs(torch.float64)[0]
        far = data.pos[:, 0].argmax()
        d = 1e-6
        outs = []
        for r in (self.cutoff - 3 * d, self.cutoff - d, self.cutoff + d, self.cutoff + 3 * d):
            pos = data.pos[far] + torch.tensor([r, 0.0, 0.0], dtype=torch.float64)
            outs.append(self.run(model, self.extra_atom(data, pos)))
        for key in self.outputs:
            a, b, c, e = (o[key] for o in outs)
            torch.testing.assert_close(c - b, ((b - a) + (e - c)) / 2, atol=1e-10, rtol=0, msg=f"output {key!r}")

    def test_isolated_atoms(self, dtype):
        """Atoms without neighbours: finite outputs, equal to the atoms computed alone."""
        model = self.make_model(dtype)
        data = self.make_graphs(dtype)[0]
        spread = data.clone()
        spread.pos = torch.arange(data.num_nodes, dtype=dtype)[:, None] * torch.tensor([2 * self.cutoff, 0, 0], dtype=dtype)
        out = self.run(model, spread)
        for key, value in out.items():
            assert torch.isfinite(value).all(), key
        self.check_isolated(model, spread, out)

    def check_isolated(self, model, data, out) -> None:
        """Model-specific checks of isolated atoms (override)."""

    # ~20 s each: the layer types are compiled on their own in tests/nn, so a variant of a model
    # family that adds nothing to compile sets ``test_compile_fullgraph = None`` (not collected)
    @pytest.mark.slow
    def test_compile_fullgraph(self):
        """``torch.compile(fullgraph=True)`` (``aot_eager``) of the forward: no graph break, same outputs."""
        model = self.make_model(torch.float64)
        data = self.with_edges(Batch.from_data_list(self.make_graphs(torch.float64)))
        fn, args = self.compile_target(model, data)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(fn)(*args)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(*args), fn(*args))
        torch._dynamo.reset()

    def test_state_dict_round_trip(self, dtype):
        """A fresh model loading a ``state_dict`` saved with ``weights_only=True`` gives equal outputs."""
        model = self.make_model(dtype)
        for name in self.statistics:  # the statistics must travel in the state_dict too
            buf = model.get_buffer(name)
            buf.copy_(torch.rand_like(buf) + 0.5)
        data = Batch.from_data_list(self.make_graphs(dtype))
        out = self.run(model, data)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        torch.manual_seed(1234)
        fresh = self.make_model(dtype)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        again = self.run(fresh, data)
        for key in self.outputs:
            torch.testing.assert_close(again[key], out[key], msg=f"output {key!r}")

    def test_repr_and_output_keys(self):
        model = self.make_model(torch.float64)
        assert "\n" not in repr(model) and type(model).__name__ in repr(model)
        out = self.run(model, self.make_graphs(torch.float64)[0])
        assert set(self.outputs) <= set(out)


class EnergyModelTests:
    """Tests of networks with ``energy`` and ``forces`` outputs; mix in before :class:`ModelTestsMixin`."""

    def check_isolated(self, model, data, out):
        assert out["forces"].abs().max() == 0
        alone = [model(Data(z=data.z[i : i + 1], pos=data.pos[i : i + 1]))["energy"] for i in range(data.num_nodes)]
        torch.testing.assert_close(out["energy"], torch.stack(alone).sum(0))

    def test_equivariance_check_catches_a_small_force_error(self):
        """Negative control: forces off by 1e-3 of their size along a fixed axis fail the float32 check.

        The energy (thousands of eV with the species shifts) must not set the scale the forces are
        judged on."""
        tol = 1e-5  # the float32 tolerance of the equivariance test

        def corrupt(out):
            forces = out["forces"]
            bias = torch.zeros_like(forces)
            bias[:, 0] = 1e-3 * forces.detach().abs().max()
            return {**out, "forces": forces + bias}

        with pytest.raises(AssertionError, match=f"output {list(self.outputs).index('forces')} under rotation"):
            self.check_equivariance(torch.float32, tol, corrupt)

    def test_forces_are_minus_energy_gradient(self):
        """Forces equal central finite differences of the energy (float64)."""
        model = self.make_model(torch.float64)
        data = self.make_graphs(torch.float64)[0]
        forces = model(data)["forces"]
        h = 1e-5
        fd = torch.zeros_like(forces)
        for i in range(data.num_nodes):
            for k in range(3):
                energies = []
                for sign in (1, -1):
                    d = data.clone()
                    d.pos = data.pos.clone()
                    d.pos[i, k] += sign * h
                    energies.append(model(d, compute_forces=False)["energy"].sum())
                fd[i, k] = -(energies[0] - energies[1]) / (2 * h)
        torch.testing.assert_close(forces, fd, atol=1e-7, rtol=1e-6)


def random_molecule(species, n: int, dtype, spread: float = 1.6, generator=None) -> Data:
    """A random molecule of ``n`` atoms whose atoms are not too close (min distance 0.7 Å)."""
    while True:
        pos = torch.randn(n, 3, dtype=torch.float64, generator=generator) * spread
        d = torch.cdist(pos, pos) + torch.eye(n, dtype=torch.float64) * 10
        if d.min() > 0.7:
            break
    z = torch.tensor(species, dtype=torch.long)[torch.randint(len(species), (n,), generator=generator)]
    return Data(z=z, pos=pos.to(dtype))


def random_molecules(species, dtype, sizes=(5, 3, 6), seed: int = 7, spread: float = 1.6) -> list[Data]:
    """Molecules of the given sizes from a generator seeded with ``seed`` (the graphs the model tests use)."""
    generator = torch.Generator().manual_seed(seed)
    return [random_molecule(species, k, dtype, spread=spread, generator=generator) for k in sizes]
