"""Many seeds and sweeps over ranks (issue 16): torchrun splits the runs, rank 0 gathers the
same records a single process produces; a failing configuration or run is reported and the
rest is kept; sweep files are checked before any work."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch.multiprocessing as mp

import model.training.config as train_config
import model.training.session as session
import train
from model.training import sweep

from conftest import ROOT

SWEEP = """
runs = 3
[base]
subset = 60
batch_size = 30
epochs = 1
tta = 1
[grid]
label_smoothing = [0.2, 0.1]
"""


def records(path):
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    return sorted(recs, key=lambda r: (r["sweep"]["index"], r["run"]))


def essence(recs):
    return [(r["sweep"]["name"], r["run"], r["seed"], r.get("failed", False), r.get("accuracy"),
             r.get("final_train_loss")) for r in recs]


@pytest.fixture
def sweep_file(tmp_path):
    p = tmp_path / "sweep.toml"
    p.write_text(SWEEP)
    return str(p)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(cifar_dir, sweep_file, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    common = ["train.py", "--data", cifar_dir, "--device", "cpu", "--sweep", sweep_file]
    one = subprocess.run([sys.executable, *common, "--json", str(tmp_path / "one.jsonl")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *common, "--json", str(tmp_path / "two.jsonl")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = records(tmp_path / "one.jsonl"), records(tmp_path / "two.jsonl")
    assert len(a) == 6 and essence(a) == essence(b)
    assert {r["rank"] for r in b} == {0, 1} and {r["rank"] for r in a} == {0}
    assert not [p for p in os.listdir(tmp_path) if ".rank" in p]  # partial files removed after the gather
    # the same table and summary as one process, from rank 0 only
    def tail(text):
        lines = text.splitlines()
        return [ln.split()[:5] for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("configuration"))):]]
    assert tail(one.stdout) == tail(two.stdout)
    assert two.stdout.count("accuracy (TTA, %): mean") == 2 and two.stdout.count("train_loss") == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, argv, result_dir):
    """One rank of a gloo job; configuration 1 ('label_smoothing=0.1') run 1 raises."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch
    torch.set_num_threads(1)
    real = session.Session.train

    def flaky(self, seed, **kw):
        if self.recipe.label_smoothing == 0.1 and seed == 1:
            raise RuntimeError("injected failure")
        return real(self, seed, **kw)

    session.Session.train = flaky
    try:
        train.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    with open(os.path.join(result_dir, f"exit{rank}"), "w") as f:
        f.write(str(code))


def test_failing_run_reported_rest_gathered(cifar_dir, sweep_file, tmp_path):
    out = tmp_path / "runs.jsonl"
    argv = ["--data", cifar_dir, "--device", "cpu", "--sweep", sweep_file, "--json", str(out), "--quiet"]
    mp.start_processes(_rank_main, args=(2, _free_port(), argv, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    codes = [(tmp_path / f"exit{r}").read_text() for r in range(2)]
    assert codes == ["1", "1"]  # every rank says that something failed
    recs = records(out)
    assert len(recs) == 6
    failed = [r for r in recs if r.get("failed")]
    assert [(r["sweep"]["name"], r["run"], r["seed"], r["rank"]) for r in failed] == [("label_smoothing=0.1", 1, 1, 1)]
    assert "injected failure" in failed[0]["error"] and "RuntimeError" in failed[0]["error"]
    assert all("accuracy" in r for r in recs if not r.get("failed"))


def test_bad_configuration_in_a_sweep_is_reported_and_the_rest_kept(cifar_dir, tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(SWEEP.replace("[grid]\nlabel_smoothing = [0.2, 0.1]",
                               "[grid]\ncuda_graph = [false, true]"))  # --cuda-graph cannot run on a CPU
    out = tmp_path / "runs.jsonl"
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--sweep", str(p), "--json", str(out), "--quiet"])
    assert e.value.code == 1
    recs = records(out)
    assert [r.get("failed", False) for r in recs] == [False] * 3 + [True] * 3
    text = capsys.readouterr().out
    assert "FAILED: cuda_graph=True run 0" in text and "needs a CUDA device" in text
    assert "cuda_graph=False" in text and "3 run(s) failed" in text


def test_ctrl_c_keeps_records(cifar_dir, tmp_path, monkeypatch, capsys):
    real = session.Session.train
    seen = []

    def interrupt(self, seed, **kw):
        seen.append(seed)
        if seed == 2:
            raise KeyboardInterrupt
        return real(self, seed, **kw)

    monkeypatch.setattr(session.Session, "train", interrupt)
    out = tmp_path / "runs.jsonl"
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1",
                    "--runs", "5", "--json", str(out), "--quiet"])
    assert e.value.code == 130 and seen == [0, 1, 2]
    assert [json.loads(line)["run"] for line in out.read_text().splitlines()] == [0, 1]
    assert "interrupted: 2 run(s) finished" in capsys.readouterr().err


def test_sweep_file_grid_and_flags(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("""
runs = 4
[base]
recipe = "airbench94"
cuda_graph = true
op = {conv = "triton"}
[grid]
backend = ["eager", "triton"]
muon_lr = [0.2, 0.24]
[[configs]]
name = "plain"
[[configs]]
name = "sixteen"
dtype = "fp16"
""")
    cfgs, runs = sweep.load(str(p), train_config.build_parser())
    assert runs == 4 and len(cfgs) == 8
    names = [n for n, _ in cfgs]
    assert names[0] == "plain backend=eager muon_lr=0.2" and names[-1] == "sixteen backend=triton muon_lr=0.24"
    flags = dict(cfgs)["sixteen backend=eager muon_lr=0.24"]
    assert flags == ["--recipe", "airbench94", "--cuda-graph", "--op", "conv=triton", "--dtype", "fp16",
                     "--backend", "eager", "--set", "muon_lr=0.24"]
    args = train_config.build_parser().parse_args(flags)
    assert train_config.parse_recipe_sets(args.set) == {"muon_lr": 0.24}


@pytest.mark.parametrize("text, message", [
    ("[grid]\nbackend = 'eager'", "grid.backend must be a non-empty list"),
    ("[base]\nnope = 1", "unknown key 'nope'"),
    ("runs = 0", "runs must be a whole number"),
    ("[base]\ncuda_graph = 'yes'", "cuda_graph is a switch"),
    ("colour = 'red'", "unknown top-level key(s) colour"),
    ("[base\n", "not valid TOML"),
])
def test_sweep_file_errors(tmp_path, text, message, cifar_dir):
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--sweep", str(p)])
    assert message in str(e.value) and str(e.value).startswith("error:")


def test_sweep_configuration_with_a_bad_value_is_refused_before_work(tmp_path, cifar_dir, monkeypatch):
    monkeypatch.setattr(session.Session, "prepare", lambda *a, **k: pytest.fail("work started"))
    p = tmp_path / "s.toml"
    p.write_text("[grid]\nepochs = [1, -1]\n")
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--sweep", str(p)])
    assert "sweep configuration 'epochs=-1': --epochs must be positive" in str(e.value)


@pytest.mark.parametrize("item, message", [
    ("lr", "--set expects NAME=VALUE"),
    ("colour=red", "unknown recipe field 'colour'"),
    ("lr=fast", "--set lr: 'fast' is not a float"),
    ("flip=maybe", "--set flip: 'maybe' is not a bool"),
])
def test_set_errors(item, message, cifar_dir):
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--set", item])
    assert message in str(e.value)


def test_set_changes_the_recipe(cifar_dir):
    recs = train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1",
                       "--quiet", "--set", "label_smoothing=0.05", "--set", "flip=false"])
    assert recs[0]["config"]["recipe_overrides"] == {"label_smoothing": 0.05, "flip": False}


def test_readme_sweep_example_loads(tmp_path):
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text[text.index("    # sweep.toml"):]
    block = block[:block.index("\n\n`")]
    p = tmp_path / "readme.toml"
    p.write_text("\n".join(line[4:] for line in block.splitlines()))
    cfgs, runs = sweep.load(str(p), train_config.build_parser())
    assert runs == 20 and len(cfgs) == 8
    assert "--cache-dir" in cfgs[0][1] and ["--set", "muon_lr=0.2"] == cfgs[0][1][-2:]
