"""Second-order methods: Newton (damped and saddle-free), L-BFGS, K-FAC and AdaHessian, on the
shared numerics of :mod:`thalweg.linalg`, with their registry entries (`catalog`)."""
