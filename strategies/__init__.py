"""Server strategies (Flower ``flwr.serverapp.strategy`` API) and baselines.

Strategies import the fedqdnn core only; aggregation math lives in
:mod:`strategies.aggregation` as pure functions testable without Flower.
"""

from strategies.fedqdnn import FedQDNN

__all__ = ["FedQDNN"]
