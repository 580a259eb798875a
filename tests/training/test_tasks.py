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
