"""The flat core: parameters, gradients and state packed into one buffer per (param group,
device, dtype) segment (`segment`, `storage`, `lowprec`), a step planned as kernel calls over
them (`plan`, `kernel`, `stored`, `reduction`), the `FlatOptimizer` that owns it all (`core`),
the step fused into backward (`backward`), the memory options (`memory`), train/eval modes
(`modes`) and torch-layout state dicts (`statedict`). Rules are written elsewhere, as chains
(:mod:`thalweg.optim.transforms`); the engine runs them."""
