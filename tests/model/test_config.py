"""TrainConfig (model/training/config.py): one typed configuration, checked once, made the same way
from flags, from a sweep entry or from a Python caller (issue 21, item 2)."""
import dataclasses

import pytest

from model.cli import SessionError
from model.training.config import TrainConfig, build_parser


def test_flags_and_a_python_caller_make_the_same_config():
    flags = TrainConfig.from_flags(["--device", "cpu", "--backend", "triton", "--op", "conv=eager",
                                    "--set", "muon_lr=0.3", "--set", "flip=false", "--target", "94%", "--epochs", "2"])
    direct = TrainConfig(device="cpu", backend="triton", ops={"conv": "eager"}, recipe_sets={"muon_lr": 0.3, "flip": False},
                         target=0.94, epochs=2.0).check()
    assert flags == direct
    assert flags.recipe_sets == {"muon_lr": 0.3, "flip": False}  # typed once, where the flags are read
    assert flags.names["bn_act"] == "triton" and flags.names["conv"] == "eager"


def test_every_flag_of_a_configuration_is_a_field():
    """A flag added to add_arguments without a field would be dropped silently: none is."""
    p = build_parser()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    run_level = {"help", "sweep", "json", "progress", "quiet"}  # the command's, not a configuration's
    renamed = {"set": "recipe_sets", "op": "ops"}
    for a in p._actions:
        if a.dest not in run_level:
            assert renamed.get(a.dest, a.dest) in fields, a.dest


@pytest.mark.parametrize("bad, says", [
    (dict(runs=0), "--runs must be at least 1"),
    (dict(subset=0), "--subset must be at least 1"),
    (dict(epochs=-1.0), "--epochs must be positive"),
    (dict(backend="trition"), "did you mean 'triton'"),
    (dict(ops={"conv": "tritn"}), "unknown implementation"),
    (dict(recipe="airbench93"), "unknown recipe"),
    (dict(recipe_sets={"muon_lrr": 1.0}), "did you mean 'muon_lr'"),
    (dict(device="tpu"), "use cpu, cuda or cuda:N"),
    (dict(device="meta"), "this lab trains on cpu, cuda or cuda:N"),
    (dict(device="cpu", backend="triton_all"), "--allow-interpreter"),
])
def test_a_python_caller_gets_the_same_one_line_errors(bad, says):
    with pytest.raises(SessionError) as e:
        TrainConfig(**bad).check()
    assert says in str(e.value)


def test_a_config_is_immutable_and_replace_checks_nothing_until_asked():
    cfg = TrainConfig(device="cpu").check()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    assert cfg.replace(seed=3).seed == 3 and cfg.seed == 0
