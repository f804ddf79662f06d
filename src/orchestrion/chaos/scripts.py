"""The scripts the chaos server answers from are the scripted model's built-in ones
(orchestrion.models.scripts); re-exported here so `orchestrion.chaos.scripts:NAME` still
names them."""

from orchestrion.models.scripts import (
    SCRIPTS,
    default_script,
    echo_script,
    load_script,
    sample_arguments,
    text_script,
)

__all__ = [
    "SCRIPTS",
    "default_script",
    "echo_script",
    "load_script",
    "sample_arguments",
    "text_script",
]
