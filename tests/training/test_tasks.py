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
        EnergyForcesTask(model, stage_two_epoch=0.75).loss_weights()


def test_plan_epochs_fits_the_time_left_at_the_pace_so_far():
    from eqgeo.training.tasks import plan_epochs

    assert plan_epochs(100, 4, elapsed_s=40.0, remaining_s=None) == 100  # no budget: max_epochs
    assert plan_epochs(100, 4, elapsed_s=40.0, remaining_s=205.0) == 24  # 10 s an epoch: 20 more fit
    assert plan_epochs(10, 4, elapsed_s=40.0, remaining_s=205.0) == 10  # never beyond max_epochs
    assert plan_epochs(100, 4, elapsed_s=40.0, remaining_s=3.0) == 5  # the epoch about to start
    assert plan_epochs(100, 0, elapsed_s=0.0, remaining_s=50.0) == 100  # no pace yet


def _budget_task(monkeypatch, elapsed_s: float, remaining_s: float, epoch: int, **task_options):
    """An EnergyForcesTask with a cosine schedule of 100 epochs of 10 steps, in a trainer whose time budget
    (``trainer.max_time``'s Timer) has ``remaining_s`` left after ``elapsed_s`` at the end of ``epoch``."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from eqgeo.training.tasks import EnergyForcesTask, adam_with_schedule

    model = {"_target_": "eqgeo.models.InteratomicPotential", "species": [1, 8], "channels": 4, "lmax": 1,
             "num_layers": 1}
    task = EnergyForcesTask(model, lr_schedule="cosine", stage_two_epoch=0.75, **task_options)
    timer = Timer(duration={"minutes": 1})
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": elapsed_s)
    monkeypatch.setattr(timer, "time_remaining", lambda stage="train": remaining_s)
    trainer = SimpleNamespace(max_epochs=100, estimated_stepping_batches=1000, callbacks=[timer],
                              strategy=SimpleNamespace(broadcast=lambda value, src=0: value))
    monkeypatch.setattr(EnergyForcesTask, "trainer", property(lambda self: trainer))
    monkeypatch.setattr(EnergyForcesTask, "current_epoch", property(lambda self: epoch))
    task.logged = {}
    monkeypatch.setattr(task, "log", lambda name, value, **options: task.logged.__setitem__(name, value))
    config = adam_with_schedule(task)
    trainer.lr_scheduler_configs = [SimpleNamespace(scheduler=config["lr_scheduler"]["scheduler"])]
    return task, config["lr_scheduler"]["scheduler"]


def test_a_time_budget_replans_the_cosine_and_stage_two_for_the_epochs_that_fit(monkeypatch):
    """At 10 s an epoch with 160 s left after 4 epochs, 20 epochs fit: the cosine reaches 0 at step 200
    instead of 1000 and stage two starts at epoch 15 instead of 75. Without a budget (negative control)
    nothing changes."""
    task, sched = _budget_task(monkeypatch, elapsed_s=40.0, remaining_s=160.0, epoch=3)
    cosine = sched.lr_lambdas[0]
    assert task.planned_epochs() == 100 and cosine.total == 1000
    task.on_train_epoch_end()
    assert task.planned_epochs() == 20 and cosine.total == 200 and task.logged == {"epochs_planned": 20.0}
    assert cosine(100) == 0.5 and cosine(200) == 0.0
    task.train()
    assert task._epoch_of(0.75) == 15
    unplanned, unplanned_sched = _budget_task(monkeypatch, elapsed_s=40.0, remaining_s=None, epoch=3)
    unplanned.on_train_epoch_end()
    assert unplanned.planned_epochs() == 100 and unplanned_sched.lr_lambdas[0].total == 1000
    assert unplanned.logged == {}


def test_the_plan_and_a_begun_stage_two_survive_replanning_and_checkpoints(monkeypatch):
    task, sched = _budget_task(monkeypatch, elapsed_s=150.0, remaining_s=50.0, epoch=14)
    task.on_train_epoch_end()  # 15 epochs done at 10 s each, 5 more fit: 20 planned, stage two from 15
    assert task.planned_epochs() == 20
    task.train()
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    restored, restored_sched = _budget_task(monkeypatch, elapsed_s=0.0, remaining_s=None, epoch=15)
    restored.on_load_checkpoint(checkpoint)
    restored_sched.load_state_dict(sched.state_dict())
    assert restored.planned_epochs() == 20 and restored_sched.lr_lambdas[0].total == 200
    restored.train()
    assert restored.loss_weights() == (1000.0, 100.0)  # epoch 15 of 20: stage two
    restored.plan["epochs"] = 40  # a later, faster pace plans more epochs: stage two, once begun, stays
    assert restored.loss_weights() == (1000.0, 100.0)
    fresh, _ = _budget_task(monkeypatch, elapsed_s=0.0, remaining_s=None, epoch=15)
    fresh.plan["epochs"] = 40
    fresh.train()
    assert fresh.loss_weights() == (1.0, 1000.0)  # negative control: not begun, epoch 15 < 30
