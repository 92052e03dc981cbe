"""thalweg: the optimization toolbox of deep learning, and the instruments that show why
training is slow or stuck."""

__version__ = "0.1.0"
