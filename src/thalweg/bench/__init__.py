"""The bench: which optimizer descends fastest on a problem, how sensitive it is to its
learning rate, and which recipe to use — scored as AlgoPerf scores (time-to-target,
performance profiles, the score with r_max = 4)."""
