"""Finding, loading and describing plugins.

Three sources, loaded in this order (the first to register a name keeps it; a later
registration of the same name is refused with a warning, never a silent override):

1. merx's built-in plugins (``merx.builtin``), registered through the same hooks as anyone's;
2. installed distributions that declare an entry point in the ``merx`` group;
3. every ``*.py`` file in ``./plugins/`` of the working directory and in ``--plugins-dir``.

``MERX_LOAD_PLUGINS`` (comma-separated plugin names; empty for built-ins only) restricts which
external plugins load; ``MERX_NO_LOCAL_PLUGINS=1`` switches off local plugin folders. A plugin
that fails to import or register produces a warning naming it and the error; merx goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from merx import hookspecs
from merx.errors import PluginBuildError as _PluginBuildError
from merx.errors import UnknownPlugin
from merx.hookspecs import KINDS

_MISSING = inspect.Parameter.empty


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; merx carries on without it."""


@dataclass
class Param:
    name: str
    default: Any = _MISSING
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def describe(self) -> str:
        return self.name if self.required else f"{self.name}={self.default!r}"


@dataclass
class Plugin:
    """One registered component: a factory plus where it came from."""

    kind: str
    name: str
    factory: Callable
    origin: str  # "built-in", "local file", or "distribution"
    source: str  # module, file path or distribution name
    version: str | None
    hook: str
    params: list[Param] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def help(self) -> str:
        return inspect.getdoc(self.factory) or ""

    @property
    def origin_label(self) -> str:
        if self.origin == "distribution":
            return f"{self.source} {self.version or ''}".strip()
        if self.origin == "local file":
            return f"local: {self.source}"
        return "built-in"

    def provenance(self) -> dict:
        """What a run stores about the plugins it used."""
        return {"kind": self.kind, "name": self.name, "origin": self.origin,
                "source": self.source, "version": self.version}

    def build(self, settings: dict, **context):
        """Call the factory with the user's settings plus the context values it asks for."""
        wanted = {k: v for k, v in context.items() if k in self.context}
        return self.factory(**wanted, **settings)


def describe_factory(kind: str, factory: Callable) -> tuple[list[Param], list[str]]:
    """Split a factory's parameters into user settings and merx-supplied context."""
    sig = inspect.signature(factory)
    params, context = [], []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"factory {factory!r} takes *args/**kwargs; declare its parameters by name "
                            "so merx can validate settings")
        if p.name in KINDS[kind].context:
            context.append(p.name)
        else:
            ann = p.annotation if p.annotation is not _MISSING else None
            params.append(Param(p.name, p.default, ann))
    return params, context


class Registry:
    """All plugins of every kind, after loading."""

    def __init__(self) -> None:
        self.plugins: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
        self.warnings: list[str] = []
        self.pm = pluggy.PluginManager("merx")
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[int, tuple[str, str, str | None]] = {}

    # -- loading ---------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    def add_module(self, module, origin: str, source: str, version: str | None) -> None:
        try:
            self.pm.register(module, name=f"{origin}:{source}")
        except Exception as exc:  # pluggy validates hook signatures here
            self.warn(f"plugin {source!r} ({origin}) could not be registered: {exc}")
            return
        try:
            # An implementation of a hook that does not exist (a typo) is otherwise ignored silently.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(module)
            self.warn(f"plugin {source!r} ({origin}) could not be registered: {exc}; "
                      f"the hooks are: {', '.join(k.hook for k in KINDS.values())}, register_commands")
            return
        self._origins[id(module)] = (origin, source, version)

    def collect(self) -> None:
        """Call every registration hook of every plugin, recording who registered what."""
        for kind, hook_name in ((k.name, k.hook) for k in KINDS.values()):
            hook = getattr(self.pm.hook, hook_name)
            # get_hookimpls() is in registration order: built-ins, entry points, local files.
            for impl in hook.get_hookimpls():
                origin, source, version = self._origins[id(impl.plugin)]

                def register(name, factory, _kind=kind, _hook=hook_name, _o=origin, _s=source, _v=version):
                    self._register(_kind, name, factory, _o, _s, _v, _hook)

                args = {"register": register}
                try:
                    impl.function(**{a: args[a] for a in impl.argnames})
                except Exception as exc:
                    self.warn(f"plugin {source!r} failed in {hook_name}: {type(exc).__name__}: {exc}")

    def _register(self, kind, name, factory, origin, source, version, hook) -> None:
        if not isinstance(name, str) or not name:
            self.warn(f"plugin {source!r} registered a {KINDS[kind].label} with an invalid name {name!r}; ignored")
            return
        if not callable(factory):
            self.warn(f"plugin {source!r}: {KINDS[kind].label} {name!r} is not callable; ignored")
            return
        existing = self.plugins[kind].get(name)
        if existing is not None:
            self.warn(f"plugin {source!r} tried to register {KINDS[kind].label} {name!r}, already registered by "
                      f"{existing.origin_label}; kept the first. Rename one of them.")
            return
        try:
            params, context = describe_factory(kind, factory)
        except (TypeError, ValueError) as exc:
            self.warn(f"plugin {source!r}: {KINDS[kind].label} {name!r} has an unusable signature: {exc}")
            return
        self.plugins[kind][name] = Plugin(kind, name, factory, origin, source, version, hook, params, context)

    # -- lookup ----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Plugin:
        try:
            return self.plugins[kind][name]
        except KeyError:
            available = ", ".join(sorted(self.plugins[kind])) or "(none)"
            raise UnknownPlugin(kind, name, available) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins[kind])


class PluginBuildError(_PluginBuildError):
    """A plugin's factory failed or returned something merx cannot use; names the plugin.

    The CLI reports it like a config error (exit status 2): the fix is in the experiment's
    settings for that plugin, or in the plugin itself."""

    def __init__(self, plugin: "Plugin", key: str, problem: str):
        self.plugin, self.key = plugin, key
        super().__init__(f"{key}: {KINDS[plugin.kind].label} {plugin.name!r} ({plugin.origin_label}) "
                         f"could not be built: {problem}")


def _allowed(name: str) -> bool:
    allow = os.environ.get("MERX_LOAD_PLUGINS")
    if allow is None:
        return True
    return name in {n.strip() for n in allow.split(",") if n.strip()}


def _load_builtins(reg: Registry) -> None:
    from merx.builtin import MODULES

    for modname in MODULES:
        module = importlib.import_module(modname)
        reg.add_module(module, "built-in", modname, None)


def _load_entry_points(reg: Registry) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="merx"):
        if not _allowed(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ep.name
        version = dist.version if dist is not None else None
        try:
            module = ep.load()
        except Exception as exc:
            reg.warn(f"plugin {ep.name!r} (distribution {dist_name}) failed to import: {type(exc).__name__}: {exc}")
            continue
        reg.add_module(module, "distribution", dist_name, version)


def local_plugin_dirs(extra: list[str] | None = None) -> list[Path]:
    if os.environ.get("MERX_NO_LOCAL_PLUGINS", "").lower() in {"1", "true", "yes"}:
        return []
    dirs = [Path.cwd() / "plugins"]
    env_dirs = os.environ.get("MERX_PLUGINS_DIR")
    if env_dirs:
        dirs += [Path(d) for d in env_dirs.split(os.pathsep) if d]
    dirs += [Path(d) for d in (extra or [])]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def _load_local(reg: Registry, dirs: list[Path]) -> None:
    for folder in dirs:
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or not _allowed(path.stem):
                continue
            modname = f"merx_local_plugins.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(modname, None)
                reg.warn(f"local plugin {str(path)!r} failed to import: {type(exc).__name__}: {exc}")
                continue
            reg.add_module(module, "local file", str(path), None)


_registry: Registry | None = None
_extra_dirs: list[str] = []


def set_plugin_dirs(dirs: list[str]) -> None:
    """Add folders of local plugins (``--plugins-dir``); takes effect at the next load."""
    global _registry, _extra_dirs
    _extra_dirs = list(dirs)
    _registry = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None or reload:
        reg = Registry()
        _load_builtins(reg)
        _load_entry_points(reg)
        _load_local(reg, local_plugin_dirs(_extra_dirs))
        reg.collect()
        _registry = reg
    return _registry


def reset() -> None:
    """Forget the loaded plugins (tests, or after changing the working directory)."""
    global _registry
    _registry = None
