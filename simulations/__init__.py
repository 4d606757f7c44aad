"""Scenario presets and runnable experiment scripts (the only place that knows scenarios by name)."""
