"""modkit's exceptions.

``UserError`` and its subclasses are mistakes in what the user gave us (a spec, a name, a
file): the CLI prints their message and exits with status 2. Anything else that escapes is a
fault of modkit or a plugin and exits with status 1.
"""
from __future__ import annotations


class ModkitError(Exception):
    """Base class of every error modkit raises on purpose."""


class UserError(ModkitError):
    """A mistake in the user's input; the message names the file, key or value at fault."""


class SpecError(UserError):
    """A spec failed validation. ``problems`` holds every (location, message) found."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


class UnknownComponentError(UserError, KeyError):
    """No component of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateComponentError(UserError):
    """Two plugins registered the same kind and name, and nothing chose between them."""


class PluginLoadError(ModkitError):
    """A plugin module raised while being imported or registered."""


class ArtifactError(UserError):
    """A file or artifact folder is missing, corrupt or of an unrecognised format."""


class MissingExtraError(UserError):
    """The command needs an optional part of modkit this install lacks (e.g. ``modkit[train]``)."""
