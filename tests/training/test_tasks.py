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


def _schedule_of(schedule, max_epochs=10, steps_per_epoch=20, **hparams):
    """The optimiser and schedule that adam_with_schedule gives a task with these hyperparameters."""
    from types import SimpleNamespace

    from lightning.fabric.utilities.data import AttributeDict

    from eqgeo.training.tasks import adam_with_schedule

    params = [torch.nn.Parameter(torch.zeros(3))]
    hp = AttributeDict(lr=0.01, weight_decay=0.0, lr_factor=0.5, lr_patience=2, lr_schedule=schedule, **hparams)
    trainer = SimpleNamespace(estimated_stepping_batches=max_epochs * steps_per_epoch, max_epochs=max_epochs)
    return adam_with_schedule(SimpleNamespace(hparams=hp, parameters=lambda: params, trainer=trainer))


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step():
    import math

    from eqgeo.training.tasks import cosine_factor

    config = _schedule_of("cosine", warmup_epochs=0.5)  # 10 warm-up steps of 200
    assert config["lr_scheduler"]["interval"] == "step"
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.01 / 10 and lrs[9] == 0.01  # linear warm-up to lr
    assert lrs[105] == 0.01 * 0.5 * (1 + math.cos(math.pi * 95 / 190))  # cosine after it
    assert lrs[10] > lrs[100] > lrs[199] > 0 and opt.param_groups[0]["lr"] == 0.0  # to 0 at the end
    assert cosine_factor(0, 100, 0) == 1.0 and cosine_factor(50, 100, 0) == 0.5 + 0.5 * math.cos(math.pi / 2)


def test_plateau_schedule_lowers_the_rate_after_slow_improvement_with_a_threshold():
    """Validation losses that improve by 0.2 % per epoch: improvements to the default threshold (1e-4) keep the
    rate; a 1 % threshold counts them as a plateau and lowers it."""
    import pytest

    losses = [1.0 * 0.998**epoch for epoch in range(8)]
    kept = _schedule_of("plateau")
    lowered = _schedule_of("plateau", lr_threshold=0.01)
    for config in (kept, lowered):
        assert config["lr_scheduler"]["monitor"] == "val/loss"
        for loss in losses:
            config["lr_scheduler"]["scheduler"].step(loss)
    assert kept["optimizer"].param_groups[0]["lr"] == 0.01
    assert lowered["optimizer"].param_groups[0]["lr"] < 0.01
    with pytest.raises(ValueError, match="warmup_epochs is for lr_schedule=cosine"):
        _schedule_of("plateau", warmup_epochs=1)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        _schedule_of("linear")
    with pytest.raises(ValueError, match="set a finite trainer.max_epochs"):
        _schedule_of("cosine", max_epochs=-1, steps_per_epoch=float("inf"))


def test_stage_two_loss_weights_in_training_from_their_epoch_only(monkeypatch):
    from eqgeo.training.tasks import EnergyForcesTask

    model = {"_target_": "eqgeo.models.InteratomicPotential", "species": [1, 8], "channels": 4, "lmax": 1,
             "num_layers": 1}
    task = EnergyForcesTask(model, energy_weight=1.0, forces_weight=1000.0, stage_two_epoch=3)
    epoch = {"now": 2}
    monkeypatch.setattr(EnergyForcesTask, "current_epoch", property(lambda self: epoch["now"]))
    task.train()
    assert task.loss_weights() == (1.0, 1000.0)  # before the stage
    epoch["now"] = 3
    assert task.loss_weights() == (1000.0, 100.0)
    task.eval()  # validation compares with the stage-one weights throughout
    assert task.loss_weights() == (1.0, 1000.0)
    task.train()
    assert EnergyForcesTask(model).loss_weights() == (1.0, 1000.0)  # no stage two by default


def test_stage_two_epoch_as_a_fraction_of_the_epochs(monkeypatch):
    from types import SimpleNamespace

    import pytest

    from eqgeo.training.tasks import EnergyForcesTask

    model = {"_target_": "eqgeo.models.InteratomicPotential", "species": [1, 8], "channels": 4, "lmax": 1,
             "num_layers": 1}
    task = EnergyForcesTask(model, stage_two_epoch=0.75)
    trainer = SimpleNamespace(max_epochs=100)
    epoch = {"now": 74}
    monkeypatch.setattr(EnergyForcesTask, "trainer", property(lambda self: trainer))
    monkeypatch.setattr(EnergyForcesTask, "current_epoch", property(lambda self: epoch["now"]))
    task.train()
    assert task.loss_weights() == (1.0, 1000.0)
    epoch["now"] = 75
    assert task.loss_weights() == (1000.0, 100.0)
    trainer.max_epochs = -1  # a run bounded by trainer.max_time only
    with pytest.raises(ValueError, match="fraction of trainer.max_epochs, which is not set"):
        task.loss_weights()
