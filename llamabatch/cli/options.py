"""Command-line options derived from the fields of a settings dataclass.

A field's `metadata["help"]` is its option's help and `metadata["metavar"]`
its placeholder; `--<name-with-dashes>` sets it, and booleans get a `--no-`
form. So the command line cannot drift from the settings it fills in.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def add_field_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One option per field of the dataclass `cls`, defaulting to the field's default."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        kind = _plain_type(hints[field.name])
        text = field.metadata["help"]
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=text
            )
            continue
        parser.add_argument(
            flag,
            type=kind,
            default=field.default,
            metavar=field.metadata.get("metavar"),
            help=text if field.default is None else f"{text} (default: %(default)s)",
        )


def field_values(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The parsed values of `cls`'s options, as keyword arguments for `cls`."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}


def _plain_type(hint: Any) -> Any:
    """`float` for `float | None`; the type itself otherwise."""
    if isinstance(hint, types.UnionType):
        (kind,) = (arg for arg in hint.__args__ if arg is not type(None))
        return kind
    return hint
