"""Chat templates: how a list of chat messages becomes one prompt for a language model.

modkit's objectives train on plain text, so an artifact carries no chat template; whoever
serves a model fine-tuned on dialogues in some layout declares that layout with
``modkit serve OUT --chat-template FILE`` (as vLLM's ``--chat-template``). The file is JSON:

.. code-block:: json

    {"roles": {"system": "### System:\\n{content}\\n\\n", "user": "### User:\\n{content}\\n\\n",
               "assistant": "### Assistant:\\n{content}\\n\\n"},
     "generation_prompt": "### Assistant:\\n", "prefix": "", "stop": ["### User:"]}

Each message becomes its role's text with ``{content}`` replaced by the message; ``prefix``
comes first and ``generation_prompt`` last (where the model's answer starts); ``stop`` texts end
an answer (added to a request's own). Roles not listed are refused. No template engine: a
format that is only text cannot run code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modkit.errors import UserError

KEYS = {"roles", "generation_prompt", "prefix", "stop"}


@dataclass(frozen=True)
class ChatTemplate:
    roles: dict[str, str]
    generation_prompt: str = ""
    prefix: str = ""
    stop: tuple[str, ...] = ()

    def render(self, messages: list[tuple[str, str]]) -> str:
        """The prompt for ``messages`` ((role, content) pairs; the roles checked by the caller)."""
        return self.prefix + "".join(self.roles[role].replace("{content}", content)
                                     for role, content in messages) + self.generation_prompt


def load_chat_template(path: str | Path) -> ChatTemplate:
    """The template in a JSON file, or a UserError naming the file and the key that is wrong."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"--chat-template {path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise UserError(f"--chat-template {path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--chat-template {path}: expected a JSON object with \"roles\"")
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise UserError(f"--chat-template {path}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(KEYS))})")
    roles = doc.get("roles")
    if not isinstance(roles, dict) or not roles or not all(
            isinstance(k, str) and isinstance(v, str) and "{content}" in v for k, v in roles.items()):
        raise UserError(f"--chat-template {path}: \"roles\" must map each role to a text holding {{content}}")
    for key in ("generation_prompt", "prefix"):
        if not isinstance(doc.get(key, ""), str):
            raise UserError(f"--chat-template {path}: {key!r} must be a text")
    stop = doc.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise UserError(f"--chat-template {path}: \"stop\" must be a list of non-empty texts")
    return ChatTemplate(roles, doc.get("generation_prompt", ""), doc.get("prefix", ""), tuple(stop))
