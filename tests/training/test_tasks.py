"""The optimiser every eqgeo task uses."""

import torch

from eqgeo.training.tasks import adam


def _run(make, steps=20):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(40, 3, dtype=torch.float64)) for _ in range(3)]
    opt = make(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)
        opt.step()
    return torch.cat([p.detach().flatten() for p in params])


def test_fused_adam_on_the_cpu_gives_the_plain_update():
    fused = _run(lambda ps: adam(ps, lr=1e-2, weight_decay=1e-3))
    plain = _run(lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3, foreach=False))
    assert adam([torch.nn.Parameter(torch.zeros(1))]).defaults["fused"] is True
    torch.testing.assert_close(fused, plain, atol=1e-12, rtol=1e-12)
    # negative control: another learning rate is far off on this scale
    other = _run(lambda ps: torch.optim.Adam(ps, lr=1.1e-2, weight_decay=1e-3, foreach=False))
    assert (other - plain).abs().max() > 1e-3


class _DataModule:
    def __init__(self, nodes):
        from torch_geometric.data import Batch, Data

        self.batch = Batch.from_data_list([Data(num_nodes=nodes)])

    def train_dataloader(self):
        return [self.batch]


def test_auto_intra_op_threads_follow_the_batch(monkeypatch):
    import pytest

    from eqgeo.training.train import AUTO_THREADS_MIN_EDGES, _set_intra_op_threads

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    stats = {"avg_num_neighbors": 8.0}
    _set_intra_op_threads("auto", _DataModule(45), stats)  # 360 edges: one thread
    assert calls == [1]
    _set_intra_op_threads("auto", _DataModule(AUTO_THREADS_MIN_EDGES // 8 + 1), stats)  # large: torch decides
    assert calls == [1]
    _set_intra_op_threads(3, _DataModule(45), stats)
    assert calls == [1, 3]
    with pytest.raises(ValueError, match="intra_op_threads must be 'auto' or a positive integer, got 0"):
        _set_intra_op_threads(0, _DataModule(45), stats)
