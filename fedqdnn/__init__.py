"""fedqdnn: federated simulation of Quantizable DNNs (switchable bit modes, bit-specific BN)."""

__version__ = "0.1.0"
