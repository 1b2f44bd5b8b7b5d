"""The component registry: plugins found through entry points, presets from registry.toml.

Loading is lazy and cheap: plugin modules register metadata and an import path; the
implementation is imported by :meth:`Component.load` on first use.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from modkit import hookspecs
from modkit.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError, UserError
from modkit.options import Options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("tokenizer", "backbone", "objective", "peft", "task", "command", "optimizer", "schedule", "source",
         "tracker")
_HOOKS = {
    "tokenizer": "modkit_register_tokenizers",
    "backbone": "modkit_register_backbones",
    "objective": "modkit_register_objectives",
    "peft": "modkit_register_peft_methods",
    "task": "modkit_register_tasks",
    "command": "modkit_register_commands",
    "optimizer": "modkit_register_optimizers",
    "schedule": "modkit_register_schedules",
    "source": "modkit_register_data_sources",
    "tracker": "modkit_register_trackers",
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ENTRY_POINT_GROUP = "modkit"


def import_object(path: str) -> Any:
    """Resolve ``"package.module:attr"`` to the object it names."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    plugin: str
    version: str
    doc: str
    options: type[Options]
    impl: str

    def load(self) -> Any:
        """Import and return the implementation (a class or factory)."""
        return import_object(self.impl)


@dataclass(frozen=True)
class Preset:
    """A named component plus option values, e.g. ``gpt2`` = ``gpt`` with GPT-2's sizes."""

    name: str
    kind: str
    use: str
    values: dict[str, Any]
    source: str
    doc: str = ""
    #: a backbone preset's own tokenizer (a tokenizer preset or component), used by a spec whose
    #: [tokenizer] names none (see :func:`modkit.spec.load_spec`)
    tokenizer: str | None = None


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    error: str


@dataclass
class Registry:
    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    conflicts: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    #: model_type -> (plugin, import path) of the Hugging Face checkpoint format that reads it
    checkpoint_formats: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: model types two plugins registered a format for, with each (plugin, import path)
    format_conflicts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> version

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.components if k == kind)

    def get(self, kind: str, name: str) -> Component:
        """The component of ``kind`` called ``name`` (not a preset)."""
        if (kind, name) in self.conflicts:
            _raise_duplicate(kind, name, [c.plugin for c in self.conflicts[(kind, name)]])
        try:
            return self.components[(kind, name)]
        except KeyError:
            raise UnknownComponentError(self._unknown_message(kind, name)) from None

    def checkpoint_format(self, model_type: str) -> tuple[str, str] | None:
        """(plugin, import path) of the format that reads Hugging Face ``model_type``, or None."""
        if model_type in self.format_conflicts:
            _raise_duplicate("checkpoint_format", model_type, [p for p, _ in self.format_conflicts[model_type]])
        return self.checkpoint_formats.get(model_type)

    def resolve(self, kind: str, name: str) -> tuple[Component, dict[str, Any]]:
        """A component or preset name -> (component, option values the preset sets)."""
        preset = self.presets.get(name)
        if (kind, name) not in self.components and (kind, name) not in self.conflicts and preset:
            if preset.kind != kind:
                raise UnknownComponentError(
                    f"{name!r} is a {preset.kind} preset, not a {kind}"
                )
            return self.get(kind, preset.use), dict(preset.values)
        return self.get(kind, name), {}

    def _unknown_message(self, kind: str, name: str) -> str:
        known = self.names(kind) + sorted(p.name for p in self.presets.values() if p.kind == kind)
        msg = f"unknown {kind} {name!r}"
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        msg += f" Known {kind}s: {', '.join(known) or 'none'}."
        if self.failures:
            msg += " Plugins that failed to load: " + ", ".join(f.plugin for f in self.failures) + "."
        return msg


def _raise_duplicate(kind: str, name: str, plugins: list[str]):
    raise DuplicateComponentError(
        f"{kind} {name!r} is registered by both {' and '.join(map(repr, plugins))}; choose one in your "
        f"registry.toml with [prefer] \"{kind}.{name}\" = \"<plugin>\"")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None


def packaged_registry_path() -> Path:
    """registry.toml shipped in the wheel, or at the repository's top in a source checkout."""
    installed = Path(__file__).with_name("registry.toml")
    return installed if installed.exists() else Path(__file__).resolve().parents[2] / "registry.toml"


class _Loader:
    """Fills one Registry. Each plugin is imported and asked to register in its own try."""

    def __init__(self, registry: Registry, prefer: dict[str, str]):
        self.registry = registry
        self.prefer = prefer
        self.pm = pluggy.PluginManager("modkit")
        self.pm.add_hookspecs(hookspecs)

    def add_module(self, plugin: str, version: str, load) -> None:
        try:
            module = load()
            self.pm.register(module, name=plugin)
            self.pm.check_pending()
        except Exception as e:  # any plugin bug must not stop the others
            if self.pm.get_plugin(plugin) is not None:
                self.pm.unregister(name=plugin)
            self.registry.failures.append(PluginFailure(plugin, f"{type(e).__name__}: {e}"))
            return
        # Everything the plugin registers is held back until all its hooks have run: a plugin
        # that fails half-way leaves the registry (components, clashes, formats) as it found it.
        components: list[Component] = []
        formats: list[tuple[str, str]] = []
        try:
            for kind, hook in _HOOKS.items():
                for impl in getattr(self.pm.hook, hook).get_hookimpls():
                    if impl.plugin_name == plugin:
                        impl.function(register=self._register_callback(kind, plugin, version, components))
            for impl in self.pm.hook.modkit_register_checkpoint_formats.get_hookimpls():
                if impl.plugin_name == plugin:
                    impl.function(register=self._format_callback(formats))
        except Exception as e:
            self.pm.unregister(name=plugin)
            self.registry.failures.append(PluginFailure(plugin, f"{type(e).__name__}: {e}"))
            return
        for comp in components:
            self._add(comp)
        for model_type, impl in formats:
            self._add_format(model_type, plugin, impl)
        self.registry.plugins[plugin] = version

    @staticmethod
    def _register_callback(kind: str, plugin: str, version: str, into: list[Component]):
        def register(name: str, impl: str, options: type[Options] = Options, doc: str = "",
                     version: str = version) -> None:
            if not _NAME.match(name):
                raise ValueError(f"component name {name!r} must match {_NAME.pattern}")
            if not (isinstance(options, type) and issubclass(options, Options)):
                raise TypeError(f"options of {kind} {name!r} must subclass modkit.Options")
            into.append(Component(kind, name, plugin, str(version), doc.strip().split("\n")[0], options, impl))

        return register

    @staticmethod
    def _format_callback(into: list[tuple[str, str]]):
        def register(model_type: str, impl: str) -> None:
            if not isinstance(model_type, str) or not model_type or not isinstance(impl, str) or ":" not in impl:
                raise ValueError(f"checkpoint format {model_type!r}: expected a model_type and a 'module:Class' "
                                 f"path, got {impl!r}")
            into.append((model_type, impl))

        return register

    def _add(self, comp: Component) -> None:
        key = (comp.kind, comp.name)
        reg = self.registry
        if key in reg.conflicts:
            reg.conflicts[key].append(comp)
        elif key in reg.components and reg.components[key].plugin != comp.plugin:
            reg.conflicts[key] = [reg.components.pop(key), comp]
        else:
            reg.components[key] = comp

    def _add_format(self, model_type: str, plugin: str, impl: str) -> None:
        reg = self.registry
        if model_type in reg.format_conflicts:
            reg.format_conflicts[model_type].append((plugin, impl))
        elif model_type in reg.checkpoint_formats and reg.checkpoint_formats[model_type][0] != plugin:
            reg.format_conflicts[model_type] = [reg.checkpoint_formats.pop(model_type), (plugin, impl)]
        else:
            reg.checkpoint_formats[model_type] = (plugin, impl)

    def settle_conflicts(self) -> None:
        """Apply the user's [prefer] table (``"tokenizer.bpe" = "plugin"``,
        ``"checkpoint_format.llama" = "plugin"``); conflicts it does not settle stay errors."""
        reg = self.registry
        for key, comps in list(reg.conflicts.items()):
            wanted = self.prefer.get(f"{key[0]}.{key[1]}")
            chosen = [c for c in comps if c.plugin == wanted]
            if chosen:
                reg.components[key] = chosen[0]
                del reg.conflicts[key]
        for model_type, entries in list(reg.format_conflicts.items()):
            wanted = self.prefer.get(f"checkpoint_format.{model_type}")
            chosen = [e for e in entries if e[0] == wanted]
            if chosen:
                reg.checkpoint_formats[model_type] = chosen[0]
                del reg.format_conflicts[model_type]


def _add_presets(registry: Registry, data: dict[str, Any], source: str) -> None:
    for name, body in data.get("presets", {}).items():
        # a recipe is a stage's keys (optimizer, schedule, lr...), not one component's options
        if not isinstance(body, dict) or "kind" not in body or ("use" not in body and body["kind"] != "recipe"):
            raise UserError(f"{source}: presets.{name}: expected a table with 'kind' and 'use'")
        tokenizer = body.get("tokenizer") if body["kind"] == "backbone" else None
        if body["kind"] == "backbone" and "tokenizer" in body and not isinstance(tokenizer, str):
            raise UserError(f"{source}: presets.{name}.tokenizer: expected the name of a tokenizer preset or "
                            f"component (got {tokenizer!r})")
        values = {k: v for k, v in body.items()
                  if k not in ("kind", "use", "doc") and not (k == "tokenizer" and body["kind"] == "backbone")}
        registry.presets[name] = Preset(name, body["kind"], body.get("use", ""), values, source,
                                        str(body.get("doc", "")), tokenizer)


def _module_loader(spec: str, base: Path):
    """A plugin module named in registry.toml: an import name or a path to a .py file."""
    if spec.endswith(".py"):
        path = (base / spec).resolve()

        def load():
            mod_spec = importlib.util.spec_from_file_location(f"modkit_local_{path.stem}", path)
            if mod_spec is None or not path.exists():
                raise FileNotFoundError(f"no such plugin file {path}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module

        return load
    return lambda: importlib.import_module(spec)


#: names the user's registry.toml when ``--registry`` does not
REGISTRY_ENV = "MODKIT_REGISTRY"


def user_registry_path(given: str | Path | None = None) -> Path | None:
    """The user's registry.toml: ``given`` (``--registry``), else ``$MODKIT_REGISTRY``, else none.

    Never a registry.toml that merely sits in the working directory: its plugin files would
    run as code, so running modkit in an untrusted folder would run that folder's code.
    """
    chosen = given or os.environ.get(REGISTRY_ENV) or None
    return Path(chosen) if chosen else None


def load_registry(user_registry: str | Path | None = None, *, use_entry_points: bool = True) -> Registry:
    """Build a registry from entry points, the packaged registry.toml and the user's one
    (``user_registry``, else ``$MODKIT_REGISTRY``; see :func:`user_registry_path`)."""
    layers: list[tuple[Path, dict[str, Any]]] = []
    packaged = packaged_registry_path()
    if packaged.exists():
        layers.append((packaged, _read_toml(packaged)))
    user_registry = user_registry_path(user_registry)
    if user_registry is not None:
        path = Path(user_registry)
        if not path.exists():
            raise UserError(f"{path}: no such registry file")
        layers.append((path, _read_toml(path)))

    registry = Registry()
    prefer: dict[str, str] = {}
    for path, data in layers:
        _add_presets(registry, data, str(path))
        prefer.update(data.get("prefer", {}))
    loader = _Loader(registry, prefer)
    if use_entry_points:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            version = ep.dist.version if ep.dist is not None else "0"
            loader.add_module(ep.name, version, ep.load)
    for path, data in layers:
        for spec in data.get("plugins", []):
            loader.add_module(spec, "local", _module_loader(spec, path.parent))
    loader.settle_conflicts()
    return registry


_cache: dict[str, Registry] = {}
_lock = threading.Lock()


def get_registry(user_registry: str | Path | None = None) -> Registry:
    """The registry, loaded once per user registry file and reused."""
    path = user_registry_path(user_registry)
    key = str(path.resolve()) if path else ""
    with _lock:
        if key not in _cache:
            _cache[key] = load_registry(path)
        return _cache[key]


def clear_registry_cache() -> None:
    with _lock:
        _cache.clear()


__all__ = [
    "KINDS", "Component", "Preset", "PluginFailure", "PluginLoadError", "Registry",
    "REGISTRY_ENV", "load_registry", "get_registry", "user_registry_path", "clear_registry_cache", "import_object",
]
