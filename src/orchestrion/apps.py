"""The user's agents named on the command line: `--app module:attr` or `--app file.py:attr`.

Shared by `orchestrion worker` and `orchestrion serve`. Every way loading can go wrong
(no such module or file, a syntax error, an exception at import, a missing attribute, a
value that is not an agent) becomes an AppLoadError whose message is one line naming
the file and line when there is one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from orchestrion.engine.agent import Agent
from orchestrion.errors import OrchestrionError

USAGE = "expected module:attribute or path/to/file.py:attribute, e.g. myapp.agents:support"


class AppLoadError(OrchestrionError, ValueError):
    """`--app` names nothing loadable, or something that is not an Agent."""


def load_agents(spec: str) -> list[Agent]:
    """The Agent, or list/tuple of Agents, that `spec` names."""
    target, sep, attribute = spec.strip().rpartition(":")
    if not sep or not target or not attribute.isidentifier():
        raise AppLoadError(f"{spec!r}: {USAGE}")
    module = _import_file(target) if _is_path(target) else _import_module(target)
    if not hasattr(module, attribute):
        found = sorted(name for name, value in vars(module).items() if _agents_in(value))
        hint = f" (it defines: {', '.join(found)})" if found else " (it defines no Agent)"
        raise AppLoadError(f"{target} has no attribute {attribute!r}{hint}")
    agents = _agents_in(getattr(module, attribute))
    if not agents:
        kind = type(getattr(module, attribute)).__name__
        raise AppLoadError(f"{spec} is a {kind}, not an Agent or a list of Agents")
    return agents


def _agents_in(value: object) -> list[Agent]:
    values: list[object] = list(value) if isinstance(value, list | tuple) else [value]
    agents = [v for v in values if isinstance(v, Agent)]
    return agents if agents and len(agents) == len(values) else []


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target or Path(target).is_file()


def _import_module(name: str) -> ModuleType:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules of this folder import
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"no module named {name!r} in the current folder or the installed packages "
                f"({USAGE})"
            ) from None
        raise _import_failure(name, exc) from None
    except Exception as exc:
        raise _import_failure(name, exc) from None


def _import_file(target: str) -> ModuleType:
    path = Path(target).expanduser()
    if path.suffix != ".py":
        raise AppLoadError(f"{target}: a file given to --app must be a .py file")
    if not path.is_file():
        raise AppLoadError(f"no such file: {path}")
    path = path.resolve()
    # Its folder is importable, so the file can import its siblings.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = path.stem if path.stem not in sys.modules else f"orchestrion_app_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failure(str(path), exc) from None
    return module


def _import_failure(what: str, exc: Exception) -> AppLoadError:
    """One line: the error, and where in the user's code it happened."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "unknown place"
        code = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        return AppLoadError(f"cannot import {what}: syntax error in {where} ({exc.msg}){code}")
    # The innermost frame of the user's code (not orchestrion's, not the import machinery).
    ours = str(Path(__file__).resolve().parent)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((ours, "<")) and "importlib" not in f.filename
    ]
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return AppLoadError(f"importing {what} failed: {detail}{where}")


__all__ = ["AppLoadError", "load_agents"]
