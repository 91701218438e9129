"""Print the configuration reference: every settings class's environment variables.

    python scripts/config_table.py        # markdown tables, one per settings class

The README's "Configuration" section is made from this output; a test checks that every
variable listed here appears in the README, so the documentation cannot go stale.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator
from typing import Any

PACKAGES = ("tessera_stac.catalog", "tessera_stac.publisher", "tessera_stac.api")


def settings_classes() -> Iterator[type[Any]]:
    """Every pydantic-settings class defined in our packages' ``settings`` modules."""
    from pydantic_settings import BaseSettings

    seen: set[type[Any]] = set()
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.endswith("settings"):
                continue
            module = importlib.import_module(f"{package_name}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(cls, BaseSettings)
                    and cls is not BaseSettings
                    and cls.__module__ == module.__name__
                    and cls not in seen
                ):
                    seen.add(cls)
                    yield cls


def variables(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for each field of ``cls``."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows = []
    for name, field in cls.model_fields.items():
        default = field.default
        text = str(default)
        shown = "" if default is None else f"`{text if len(text) < 40 else text[:37] + '...'}`"
        rows.append(((prefix + name).upper(), shown, field.description or ""))
    return rows


def markdown() -> str:
    """The configuration reference as markdown."""
    out: list[str] = []
    for cls in settings_classes():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"**`{cls.__module__}.{cls.__name__}`**: {doc}", ""]
        out += ["| variable | default | meaning |", "|---|---|---|"]
        out += [f"| `{var}` | {default} | {desc} |" for var, default, desc in variables(cls)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
