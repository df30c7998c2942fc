"""Benchmarks with ground truth: HMM languages and synthetic runs."""
