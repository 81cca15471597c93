"""Evaluation: metrics with confidence intervals, chance levels, figures and run reports."""

from .metrics import (chance_threshold, classification_metrics, confusion, oracle_bound,
                      summarise, wilson_interval)

__all__ = ["chance_threshold", "classification_metrics", "confusion", "oracle_bound",
           "summarise", "wilson_interval"]
