"""Chaos tooling: fault plans and the chaos LLM server (see docs/chaos.md)."""

from orchestrion.chaos.plan import FAULTS, PRESETS, FaultPlan, FaultRule, preset
from orchestrion.chaos.server import ChaosApp, create_app

__all__ = ["FAULTS", "PRESETS", "ChaosApp", "FaultPlan", "FaultRule", "create_app", "preset"]
