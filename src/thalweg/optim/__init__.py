"""Update rules: first-order optimizers over flat, compiled buffers, composable transforms,
second-order methods, and the registry that lists them all."""
