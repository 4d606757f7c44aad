"""Flower apps (ClientApp, ServerApp) and the in-process Ray simulation runner."""

# In an instruction's config: the partition a virtual node simulates (simulation engine, where
# the server assigns them); a deployment-engine node knows its own (node config partition-id).
PARTITION_KEY = "simulate-partition"
