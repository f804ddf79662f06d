"""Finding the commands and code in README.md and docs/*.md, so tests can run them.

- Python: every ```python block (reference material such as signatures uses ```text).
- Shell: every `$ ` line of a ```console block (with its documented output: the lines up
  to the next `$ `), every indented code line that starts with `orchestrion`, and every
  inline `orchestrion ...` code span that is a command rather than a synopsis (no `[`,
  `|` or `…`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYNOPSIS = ("[", "|", "…", "...")


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    language: str
    text: str


@dataclass
class Command:
    doc: str
    line: int
    text: str  # as written (continuation lines joined)
    output: list[str] = field(default_factory=list)  # documented output, console only
    console: bool = False

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def orchestrion_args(self) -> list[str] | None:
        """The arguments after `orchestrion`, when the command runs it (leading VAR=value
        assignments, a trailing `&`, redirections and comments left out); else None."""
        try:
            words = shlex.split(self.text, comments=True)
        except ValueError:
            return None
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if not words or words[0] != "orchestrion":
            return None
        args: list[str] = []
        for word in words[1:]:
            if word in ("&", ";", "&&", "|") or word.startswith((">", "2>")):
                break
            args.append(word)
        return args


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if opening:
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            found.append(Block(_name(path), i + 1, opening.group(1), "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return found


def python_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path) if b.language == "python"]


def _complete(text: str) -> bool:
    """Whether a shell line is whole (no quotation left open)."""
    try:
        shlex.split(text)
    except ValueError:
        return False
    return True


def console_commands(path: Path) -> list[Command]:
    commands: list[Command] = []
    for block in blocks(path):
        if block.language != "console":
            continue
        current: Command | None = None
        lines = block.text.splitlines()
        n = 0
        while n < len(lines):
            line = lines[n]
            if line.startswith("$ "):
                text, first = line[2:], n
                while (text.endswith("\\") or not _complete(text)) and n + 1 < len(lines):
                    n += 1
                    text = text + "\n" + lines[n]  # kept as written, backslash included
                current = Command(block.doc, block.line + 1 + first, text, console=True)
                commands.append(current)
            elif current is not None:
                current.output.append(line)
            n += 1
    return commands


def other_commands(path: Path) -> list[Command]:
    """Indented code lines and inline code spans that run orchestrion."""
    found: list[Command] = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if re.match(r"^ {4,}(?:[A-Z_]+=\S+ )*orchestrion ", line):
            text = line.strip()
            if not any(mark in text for mark in SYNOPSIS):
                found.append(Command(_name(path), number, text))
            continue
        for span in re.findall(r"`((?:[A-Z_]+=\S+ )*orchestrion [^`]+)`", line):
            if not any(mark in span for mark in SYNOPSIS):
                found.append(Command(_name(path), number, span))
    return found


def all_orchestrion_commands() -> list[Command]:
    commands = [c for path in DOCS for c in (*console_commands(path), *other_commands(path))]
    return [c for c in commands if c.orchestrion_args() is not None]
