"""Benchmarks: training-step cost (step_time), simulation overhead (sim_overhead), run_all."""
