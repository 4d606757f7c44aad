"""Shared test settings: small thread count so tests behave alike on any machine."""

import torch

torch.set_num_threads(1)
