"""The run machinery, apart from the network (model/: net, data, optimizers, recipes).

    config.py       TrainConfig: one training configuration, typed and checked once (from flags,
                    a sweep entry or a Python caller)
    session.py      a Session built from a TrainConfig (ops, device, dtype, recipe, data, net, step
                    functions); ``execute``: seeded runs of one or many configurations across ranks
    trainer.py      one training run (the loop, the timer, evaluation with TTA)
    runner.py       eager / compiled / CUDA-graphed training steps; compiled.py: torch.compile, caches
    distributed.py  torchrun ranks; sweep.py: TOML sweeps; env.py: environment records;
    stats.py        t-intervals, Welch's test, runs needed
"""
