"""Scenario presets and runnable scripts: the only place that knows scenarios by name."""
