"""The bench's tasks: what is optimized — the built-in problems and workloads (the seeds' 2-D
functions, MNIST-1D, digits, the character LM), workloads from config files, and their targets."""
