"""Flower apps (ClientApp, ServerApp) and the in-process Ray simulation runner."""
