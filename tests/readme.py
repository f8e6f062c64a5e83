"""The README's commands, as a user would copy them: its ```sh blocks and the `make` commands
named in its prose, each with the output the README shows under it, if any."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace

_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_ANY_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`([^`]+)`")
_MAKE_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*make [a-z]+$")


@dataclass(frozen=True, slots=True)
class Command:
    """One command of the README: `text` as bash runs it, `shown` the output printed under it
    (a `# {...}` line straight after it, where `...` stands for anything)."""

    text: str
    shown: str | None = None

    @property
    def words(self) -> str:
        """The command on one line, without comments: what checks match against."""
        return " ".join(word.strip() for word in shlex.split(self.text, comments=True)).strip()

    def shows(self, output: str) -> bool:
        """Whether `output` is what the README shows under the command."""
        if self.shown is None:
            return True
        pattern = ".*".join(re.escape(piece) for piece in self.shown.split("..."))
        return re.fullmatch(pattern, output.strip(), re.S) is not None


def readme_commands(text: str) -> list[Command]:
    """Every command the README shows, in order: blocks first, then `make` in the prose."""
    commands = [c for block in _SH_BLOCK.findall(text) for c in _block_commands(block)]
    prose = _ANY_BLOCK.sub("", text)
    spans = (" ".join(span.split()) for span in _CODE_SPAN.findall(prose))
    shown = {c.words for c in commands}
    for span in spans:
        if _MAKE_COMMAND.match(span) and span not in shown:
            commands.append(Command(span))
            shown.add(span)
    return commands


def _block_commands(block: str) -> list[Command]:
    """Commands of one shell block: continued lines and multi-line quotes joined."""
    commands: list[Command] = []
    pending = ""
    after_command = False
    for line in block.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            if after_command and stripped.startswith("# {"):
                commands[-1] = replace(commands[-1], shown=stripped[2:])
            after_command = False
            continue
        pending = f"{pending}\n{line}" if pending else line
        if _complete(pending):
            commands.append(Command(pending.strip()))
            pending, after_command = "", True
    if pending:
        raise ValueError(f"unfinished command in a README block: {pending!r}")
    return commands


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # a quote still open: the command goes on on the next line
        return False
    return True
