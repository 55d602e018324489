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


def test_fast_on_a_cpu_is_a_clear_error():
    with pytest.raises(SessionError, match="--fast picks the fastest configuration of a GPU"):
        TrainConfig.from_flags(["--device", "cpu", "--fast"])
    with pytest.raises(SessionError, match="drop --backend"):
        TrainConfig.from_flags(["--device", "cpu", "--fast", "--backend", "triton"])


def test_fast_takes_the_static_models_fastest_whole_backend(monkeypatch, tmp_path):
    """--fast on a GPU: the backend with the smallest predicted step among those modelled whole
    (no eager op) and runnable on the arch, --cuda-graph, compile none; the choice printed in full;
    a GPU report (fast.json for this arch) wins over the model."""
    import json
    import torch
    from model.training import config, fast
    steps = [dict(backend="triton", arch="sm_90", predicted_ms=1.0, eager_ops=5),          # cuDNN convs: not whole
             dict(backend="triton_all", arch="sm_90", predicted_ms=4.9, eager_ops=0, predicted_range_ms=[4.1, 5.5]),
             dict(backend="fused", arch="sm_90", predicted_ms=4.6, eager_ops=0, predicted_range_ms=[3.9, 5.2]),
             dict(backend="fp8", arch="sm_80", predicted_ms=None, eager_ops=0),
             dict(backend="fused", arch="sm_80", predicted_ms=9.0, eager_ops=0, predicted_range_ms=[7.6, 10.1])]
    static = tmp_path / "static.json"
    static.write_text(json.dumps(dict(steps=steps)))
    monkeypatch.setattr(fast.from_static, "__defaults__", (str(static),))
    monkeypatch.setattr(config, "device_of", lambda name: torch.device("cuda"))
    monkeypatch.setattr(fast, "arch_of", lambda device: "sm_90")
    monkeypatch.setattr(fast, "from_gpu_reports", lambda arch: None)
    values = config.fast_values(build_parser().parse_args(["--fast"]), {})
    assert (values["backend"], values["compile"], values["cuda_graph"]) == ("fused", "none", True)
    assert values["fast"].startswith("--fast: --backend fused --compile none --cuda-graph (predicted by the static")
    assert "4.60 ms" in values["fast"] and "3.90-5.20" in values["fast"] and "not a measurement" in values["fast"]
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "fast.json").write_text(json.dumps(dict(arch="sm_90", backend="triton_all", compile="default",
                                                               cuda_graph=True, basis="A/B 10 runs each")))
    monkeypatch.undo()
    choice = fast.from_gpu_reports("sm_90", str(tmp_path))
    assert choice.flags() == "--backend triton_all --compile default --cuda-graph" and "measured on a GPU" in choice.line()
    assert fast.from_gpu_reports("sm_80", str(tmp_path)) is None


def test_fast_reads_the_committed_static_report():
    """The committed report ranks a whole backend on both architectures (what --fast would take)."""
    from model.training import fast
    for arch in ("sm_80", "sm_90"):
        choice = fast.from_static(arch)
        assert choice.cuda_graph and choice.compile == "none" and "prediction" in choice.basis
