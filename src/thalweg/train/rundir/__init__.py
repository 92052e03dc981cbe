"""A run's directory: claimed under a lock (`lock`), its files and metrics log (`runs`),
checkpoints written atomically with checksums (`checkpoint`), the checks that decide whether
one can be resumed (`resume`), and the counters and random streams it restores (`state`)."""
