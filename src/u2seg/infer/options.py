"""The user options of background removal: one table for the CLI, the HTTP service and the window.

Each :class:`Option` in :data:`OPTIONS` says what a setting is called (rembg's long name, used
in Python and over HTTP; ``--long-name`` on the command line), rembg's short alias, its type,
range or choices, default, help text, the :class:`~u2seg.infer.refine.RefineOptions` field it
sets, and which front ends offer it. Everything a front end shows is made from the table:

* :func:`add_cli_arguments` and :func:`refine_options_from_cli`: ``u2seg remove``'s flags;
* :func:`parse_http` and :func:`http_parameters`: ``POST /api/remove``'s parameters and their
  OpenAPI descriptions;
* :func:`gui_controls`: the desktop window's refinement controls (labels, tooltips, slider).

The help text is written once: it is the CLI's help, and the OpenAPI description and the GUI
tooltip are made from it (plus the range, default and alias, where the help does not say them).
Values end in ``RefineOptions``, which checks them again and owns the rules between fields
(``only_mask`` excludes colours, ...); the ranges here are the ones it accepts (the tests check
that), with an upper bound on ``crop_margin`` for requests. This module imports nothing heavy:
the CLI reads it at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import collapse_whitespace

if TYPE_CHECKING:
    import argparse

    from .refine import RefineOptions

__all__ = [
    "CLI", "GUI", "HTTP", "OPTIONS", "GuiControl", "Option", "OptionError", "add_cli_arguments", "get_option",
    "gui_controls", "http_parameters", "parse_http", "refine_options_from_cli",
]

CLI, HTTP, GUI = "cli", "http", "gui"
TYPES = ("bool", "int", "float", "color", "choice", "str", "path")
_OPENAPI_TYPES = {"bool": "boolean", "int": "integer", "float": "number"}  # the rest are strings
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


class OptionError(ValueError):
    """A value a front end cannot accept; the message, one line, names the option."""


@dataclass(frozen=True)
class Option:
    """One user option. ``name`` is the Python and HTTP name (rembg's long name); the CLI flag is
    ``--name-with-dashes`` plus ``-alias``, and ``alias`` is accepted over HTTP too."""

    name: str
    type: str                                   # one of TYPES
    help: str                                   # CLI help; OpenAPI description and tooltip start with it
    default: Any = None
    alias: str | None = None                    # rembg's short name (om, a, af, ab, ae, ppm, bgc)
    range: tuple[float, float] | None = None    # inclusive bounds of an int or float
    choices: tuple[str, ...] | None = None      # type "choice"
    field: str | None = None                    # the RefineOptions field it sets
    where: frozenset[str] = frozenset({CLI, HTTP})
    metavar: str | tuple[str, ...] | None = None  # CLI
    note: str = ""                              # a further sentence for the OpenAPI description and tooltip
    label: str = ""                             # GUI
    slider: tuple[int, int, int, int] | None = None  # GUI float: (min, max, start) ticks and ticks per unit

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type must be one of {', '.join(TYPES)}, got {self.type!r}")
        if not self.where <= {CLI, HTTP, GUI}:
            raise ValueError(f"option {self.name}: where must be within cli, http, gui, got {set(self.where)}")
        if (self.type == "choice") != (self.choices is not None):
            raise ValueError(f"option {self.name}: choices go with type 'choice'")
        if GUI in self.where and (not self.label or self.type not in ("bool", "float")):
            raise ValueError(f"option {self.name}: the window shows booleans and sliders, with a label")

    @property
    def flags(self) -> tuple[str, ...]:
        """The CLI's option strings: ``('--only-mask', '-om')``."""
        long = "--" + self.name.replace("_", "-")
        return (long, f"-{self.alias}") if self.alias else (long,)

    @property
    def group(self) -> str:
        """``"refine"`` for the options that set a RefineOptions field, else ``"output"``."""
        return "refine" if self.field is not None else "output"

    def describe(self) -> str:
        """The OpenAPI description: the help and note as sentences, then what the help leaves out
        (the accepted values, range, default) and rembg's alias."""
        sentences = [_sentence(self.help)]
        if self.type == "color":
            sentences.append("'R,G,B' or 'R,G,B,A' (0…255 each), or '#RRGGBB[AA]'; none or empty: transparent")
        elif self.type == "choice" and not all(c in self.help for c in self.choices or ()):
            sentences.append(f"One of {', '.join(self.choices or ())}")
        sentences += [self.note] if self.note else []
        facts = []
        if self.range is not None and _span(self.range) not in self.help:
            named = isinstance(self.metavar, str) and f" {self.metavar} " in f" {self.help} "
            facts.append(f"{self.metavar} within {_span(self.range)}" if named else f"within {_span(self.range)}")
        if self.default is not None and self.type != "bool" and f"default {self.default}" not in self.help:
            facts.append(f"default {self.default}")
        if facts:
            sentences.append(_sentence(", ".join(facts)))
        if self.type == "float" and self.default is None:
            sentences.append("None or empty: off")
        if self.alias:
            sentences.append(f"Alias: {self.alias}")
        return _sentences(sentences)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentences(parts: list[str]) -> str:
    return " ".join(s if s.endswith(".") else s + "." for s in parts)


def _span(bounds: tuple[float, float]) -> str:
    lo, hi = bounds
    return f"{lo:g}…{hi:g}"


#: The options, in the order the CLI lists them (HTTP-only ``model`` first).
OPTIONS: tuple[Option, ...] = (
    Option("model", "str", "model name (see GET /api/models); default: the server's default model",
           where=frozenset({HTTP})),
    Option("only_mask", "bool", "write the 8-bit mask instead of a cutout", False, alias="om",
           field="only_mask", note="A grayscale PNG or WebP."),
    Option("bgcolor", "color", "composite the cutout over this colour", alias="bgc", field="bgcolor",
           metavar=("R", "G", "B", "A")),
    Option("bg_image", "path", "composite the cutout over this picture", field="background",
           where=frozenset({CLI}), metavar="PATH"),
    Option("edge_refine", "bool", "refine edges at full resolution, guided by the image's colours", False,
           field="edge_refine", where=frozenset({CLI, HTTP, GUI}), label="Refine edges",
           note="A fast guided filter (about 40 ms per megapixel): the mask's edges, thin strands and "
                "holes follow the picture's own instead of the 320-pixel prediction's blur."),
    Option("alpha_matting", "bool", "refine edges with alpha matting (pymatting)", False, alias="a",
           field="alpha_matting", where=frozenset({CLI, HTTP, GUI}), label="Alpha matting",
           note="Slow; the first use compiles pymatting for about a minute."),
    Option("alpha_matting_foreground_threshold", "int", "matting: mask ≥ N (0…255) is sure foreground (default 240)",
           240, alias="af", range=(0, 255), field="fg_threshold", metavar="N"),
    Option("alpha_matting_background_threshold", "int", "matting: mask ≤ N is sure background (default 10)",
           10, alias="ab", range=(0, 255), field="bg_threshold", metavar="N"),
    Option("alpha_matting_erode_size", "int", "matting: erode the sure regions by N pixels (default 10)",
           10, alias="ae", range=(0, 1000), field="erode_size", metavar="N"),
    Option("post_process_mask", "bool", "clean the mask up (opening, smooth edge)", False, alias="ppm",
           field="post_process_mask", where=frozenset({CLI, HTTP, GUI}), label="Clean mask",
           note="Specks disappear and the mask becomes binary, as rembg's post_process_mask."),
    Option("threshold", "float", "hard mask: probability ≥ T (0…1) is foreground", None, range=(0.0, 1.0),
           field="threshold", where=frozenset({CLI, HTTP, GUI}), metavar="T", label="Threshold",
           slider=(1, 99, 50, 100)),
    Option("decontaminate", "bool", "estimate the object's colours at soft edges", False, field="decontaminate",
           where=frozenset({CLI, HTTP, GUI}), label="Decontaminate edges",
           note="Semi-transparent pixels lose the old background's tint."),
    Option("crop", "bool", "crop to the object's bounding box", False, field="crop"),
    Option("crop_margin", "int", "pixels kept around the box", 0, range=(0, 10_000), field="crop_margin",
           metavar="N"),
    Option("format", "choice", "output format (default png)", "png", choices=("png", "webp"), note="Both lossless."),
    Option("video_format", "choice",
           "videos and animated images: webm (VP9 with alpha, plays in browsers), mov (ProRes 4444 with alpha, "
           "for editors), mp4 (H.264 over --bgcolor, --bg-image or the frame blurred), gif, webp (animated, "
           "8-bit alpha) or png (a folder of frames); default webm for videos, webp for animated images",
           None, choices=("webm", "mov", "mp4", "gif", "webp", "png"), where=frozenset({CLI})),
    Option("temporal", "choice",
           "video masks: flow (default: motion-compensated smoothing against flicker) or off (each frame alone)",
           "flow", choices=("flow", "off"), where=frozenset({CLI})),
)

_BY_NAME = {o.name: o for o in OPTIONS}
_BY_FIELD = {o.field: o for o in OPTIONS if o.field is not None}


def get_option(name: str) -> Option:
    """The option called ``name`` (KeyError if none)."""
    return _BY_NAME[name]


# --------------------------------------------------------------------------- command line


def add_cli_arguments(parser: argparse.ArgumentParser, group: str | None = None) -> None:
    """Add the CLI's options (all, or one :attr:`Option.group`: ``"refine"`` or ``"output"``)."""
    for o in OPTIONS:
        if CLI not in o.where or (group is not None and o.group != group):
            continue
        kwargs: dict[str, Any] = {"help": o.help}
        if o.type == "bool":
            kwargs["action"] = "store_true"
        elif o.type == "choice":
            kwargs.update(choices=o.choices, default=o.default)
        else:
            kwargs["type"] = {"int": int, "float": float, "color": int, "path": Path, "str": str}[o.type]
            kwargs["metavar"] = o.metavar
            if o.type == "color":
                kwargs["nargs"] = 4  # R G B A
            if o.default is not None:
                kwargs["default"] = o.default
        parser.add_argument(*o.flags, **kwargs)


def refine_options_from_cli(args: argparse.Namespace) -> RefineOptions:
    """The RefineOptions that parsed CLI arguments describe (``--bg-image`` is loaded here);
    a bad value is a ValueError naming the field."""
    from ..image_io import load_image
    from .refine import RefineOptions

    values: dict[str, Any] = {}
    for o in OPTIONS:
        if CLI not in o.where or o.field is None:
            continue
        value = getattr(args, o.name)
        if o.type == "color":
            value = tuple(value) if value else None
        elif o.type == "path":
            value = load_image(value) if value else None
        values[o.field] = value
    return RefineOptions(**values)


# --------------------------------------------------------------------------- HTTP


def http_parameters() -> list[tuple[str, str, str]]:
    """``(name, OpenAPI type, description)`` of every HTTP parameter, in table order."""
    return [(o.name, _OPENAPI_TYPES.get(o.type, "string"), o.describe()) for o in OPTIONS if HTTP in o.where]


def _http_aliases() -> dict[str, str]:
    return {o.alias: o.name for o in OPTIONS if HTTP in o.where and o.alias}


def _parse_bool(o: Option, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise OptionError(f"{o.name} must be a boolean (true/false, 1/0, on/off), got {value!r}")


def _parse_int(o: Option, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise OptionError(f"{o.name} must be an integer, got {value!r}") from None
    if o.range is not None and not o.range[0] <= number <= o.range[1]:
        raise OptionError(f"{o.name} must be within {_span(o.range)}, got {number}")
    return number


def _parse_float(o: Option, value: str) -> float | None:
    v = value.strip().lower()
    if o.default is None and v in ("", "none", "null"):
        return None
    within = f" within {_span(o.range)}" if o.range is not None else ""
    try:
        number = float(v)
    except ValueError:
        raise OptionError(f"{o.name} must be a number{within}, got {value!r}") from None
    if math.isnan(number) or (o.range is not None and not o.range[0] <= number <= o.range[1]):
        raise OptionError(f"{o.name} must be{within or ' a number'}, got {value!r}")
    return number


def _parse_color(o: Option, value: str) -> tuple[int, int, int, int] | None:
    v = value.strip()
    if v.lower() in ("", "none", "transparent"):
        return None
    problem = f"{o.name} must be 'R,G,B' or 'R,G,B,A' with integers 0…255, or '#RRGGBB[AA]', got {value!r}"
    if v.startswith("#"):
        digits = v[1:]
        if len(digits) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise OptionError(problem)
        parts = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
    else:
        try:
            parts = [int(p.strip()) for p in v.split(",")]
        except ValueError:
            raise OptionError(problem) from None
    if len(parts) not in (3, 4) or any(not 0 <= p <= 255 for p in parts):
        raise OptionError(problem)
    return (parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else 255)


def _parse_choice(o: Option, value: str) -> str:
    v = (value or o.default).strip().lower().lstrip(".")
    choices = o.choices or ()
    if v not in choices:
        allowed = " or ".join(choices) if len(choices) <= 2 else f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise OptionError(f"{o.name} must be {allowed}, got {value!r}")
    return v


def _parse_str(o: Option, value: str) -> str | None:
    return value.strip() or None


_PARSERS = {"bool": _parse_bool, "int": _parse_int, "float": _parse_float, "color": _parse_color,
            "choice": _parse_choice, "str": _parse_str}
# Checked in this order (the first problem is the one reported): choices, booleans, integers, then
# the matting thresholds against each other, numbers, colours.
_RANK = {"choice": 0, "str": 0, "bool": 1, "int": 2, "float": 3, "color": 4}


def _check_matting_thresholds(fields: Mapping[str, Any]) -> None:
    fg_option, bg_option = _BY_FIELD["fg_threshold"], _BY_FIELD["bg_threshold"]
    fg = fields.get("fg_threshold", fg_option.default)
    bg = fields.get("bg_threshold", bg_option.default)
    if bg >= fg:
        raise OptionError(f"{bg_option.name} ({bg}) must be lower than {fg_option.name} ({fg})")


def parse_http(values: Mapping[str, str]) -> tuple[RefineOptions, str, str | None]:
    """``POST /api/remove``'s parameters (query and form fields, merged) → ``(RefineOptions,
    format, model)``; ``model`` is None when not given.

    Names are the long names or rembg's aliases; an unknown name, a name given twice with
    different values, or a bad value raises :class:`OptionError` with one line naming it.
    Booleans: true/false, 1/0, on/off, yes/no (t/f, y/n); ``threshold``: none, null or empty for
    none; ``bgcolor``: 'R,G,B[,A]', '#RRGGBB[AA]', or none/transparent.
    """
    options = [o for o in OPTIONS if HTTP in o.where]
    aliases = _http_aliases()
    known = {o.name for o in options}
    merged: dict[str, str] = {}
    for key, value in values.items():
        name = aliases.get(key, key)
        if name not in known:
            raise OptionError(f"unknown parameter {key!r}; known: {', '.join(o.name for o in options)} "
                              f"(rembg's aliases {', '.join(aliases)} work too)")
        if name in merged and merged[name] != value:
            raise OptionError(f"parameter {name!r} given twice with different values")
        merged[name] = value

    parsed: dict[str, Any] = {}
    fields: dict[str, Any] = {}

    def parse(group: list[Option]) -> None:
        for o in group:
            parsed[o.name] = value = _PARSERS[o.type](o, merged.get(o.name, ""))
            if o.field is not None:
                fields[o.field] = value

    given = sorted((o for o in options if o.name in merged or o.type == "choice"), key=lambda o: _RANK[o.type])
    parse([o for o in given if _RANK[o.type] <= _RANK["int"]])
    _check_matting_thresholds(fields)
    parse([o for o in given if _RANK[o.type] > _RANK["int"]])

    from .refine import RefineOptions

    try:
        refine = RefineOptions(**fields)
    except (ValueError, TypeError) as exc:
        raise OptionError(collapse_whitespace(exc)) from None
    return refine, parsed["format"], parsed.get("model")


# --------------------------------------------------------------------------- desktop window


@dataclass(frozen=True)
class GuiControl:
    """A control of the window: a check box (``kind="check"``), or a check box that switches a
    slider on (``kind="slider"``; off means None)."""

    name: str
    field: str
    kind: str
    label: str
    tooltip: str
    minimum: int = 0   # slider ticks
    maximum: int = 0
    start: int = 0
    scale: int = 1     # ticks per unit: the value is ticks / scale

    def value(self, checked: bool, ticks: int = 0) -> bool | float | None:
        """The RefineOptions value the control's state stands for."""
        if self.kind == "check":
            return checked
        return ticks / self.scale if checked else None

    def text(self, ticks: int) -> str:
        """The slider's value as shown beside it (``0.50``)."""
        return f"{ticks / self.scale:.{max(len(str(self.scale)) - 1, 0)}f}"


def gui_controls() -> list[GuiControl]:
    """The refinement controls the window shows, in table order."""
    controls = []
    for o in OPTIONS:
        if GUI not in o.where:
            continue
        text = _sentence(o.help)
        if o.slider is not None and isinstance(o.metavar, str):
            text = text.replace(f" {o.metavar} ", " the slider's value ")
        tooltip = _sentences([text] + ([o.note] if o.note else []))
        if o.type == "float":
            lo, hi, start, scale = o.slider or (0, 100, 50, 100)
            controls.append(GuiControl(o.name, o.field or o.name, "slider", o.label, tooltip, lo, hi, start, scale))
        else:
            controls.append(GuiControl(o.name, o.field or o.name, "check", o.label, tooltip))
    return controls
