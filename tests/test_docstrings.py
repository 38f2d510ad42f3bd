"""Every public module, class, function and method of dokumi says what it does."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil

import dokumi

# modules of optional integrations whose framework is not installed are skipped by name only when absent
OPTIONAL = {"dokumi.integrations.datatrove": "datatrove", "dokumi.integrations.nemo_curator": "nemo_curator",
            "dokumi.engines.dask": "dask"}


def public_modules():
    for info in pkgutil.walk_packages(dokumi.__path__, prefix="dokumi."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):  # private, and the __main__ entry
            continue
        if info.name in OPTIONAL and importlib.util.find_spec(OPTIONAL[info.name]) is None:
            continue
        yield importlib.import_module(info.name)


def undocumented() -> list[str]:
    missing = []
    for module in public_modules():
        if not (module.__doc__ or "").strip():
            missing.append(module.__name__)
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) or inspect.isclass(value):
                if not (value.__doc__ or "").strip():
                    missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(value):
                for attribute, member in vars(value).items():
                    function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if attribute.startswith("_") or not inspect.isfunction(function):
                        continue
                    # an override of a documented method inherits its docstring, as help() and Sphinx show it
                    if not (inspect.getdoc(getattr(value, attribute, None)) or "").strip() and not (
                            function.__doc__ or "").strip():
                        missing.append(f"{module.__name__}.{name}.{attribute}")
    return missing


def test_every_public_name_has_a_docstring():
    assert undocumented() == []
