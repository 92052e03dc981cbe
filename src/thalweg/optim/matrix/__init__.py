"""The per-tensor and matrix rules on stacks of equal-shape parameters (`stacked`): Adafactor,
Muon, Shampoo and SOAP (Kronecker factors in `kronecker`), with their registry entries
(`catalog`)."""
