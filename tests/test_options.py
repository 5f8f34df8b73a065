"""The option table (u2seg.infer.options): CLI flags, HTTP parameters and GUI controls from one source."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from u2seg.cli import build_parser
from u2seg.infer.options import (
    CLI,
    GUI,
    HTTP,
    OPTIONS,
    OptionError,
    get_option,
    gui_controls,
    http_parameters,
    parse_http,
    refine_options_from_cli,
)
from u2seg.infer.refine import RefineOptions

# `u2seg remove`'s refinement and format flags as they were before the table existed (captured
# from build_parser() by hand-written add_argument calls): option strings, dest, default, nargs,
# metavar, type, choices, help, action.
EXPECTED_REMOVE_FLAGS = [
    (("--only-mask", "-om"), "only_mask", False, 0, None, None, None,
     "write the 8-bit mask instead of a cutout", "_StoreTrueAction"),
    (("--bgcolor", "-bgc"), "bgcolor", None, 4, ("R", "G", "B", "A"), "int", None,
     "composite the cutout over this colour", "_StoreAction"),
    (("--bg-image",), "bg_image", None, None, "PATH", "Path", None,
     "composite the cutout over this picture", "_StoreAction"),
    (("--edge-refine",), "edge_refine", False, 0, None, None, None,
     "refine edges at full resolution, guided by the image's colours", "_StoreTrueAction"),
    (("--alpha-matting", "-a"), "alpha_matting", False, 0, None, None, None,
     "refine edges with alpha matting (pymatting)", "_StoreTrueAction"),
    (("--alpha-matting-foreground-threshold", "-af"), "alpha_matting_foreground_threshold", 240, None, "N", "int",
     None, "matting: mask ≥ N (0…255) is sure foreground (default 240)", "_StoreAction"),
    (("--alpha-matting-background-threshold", "-ab"), "alpha_matting_background_threshold", 10, None, "N", "int",
     None, "matting: mask ≤ N is sure background (default 10)", "_StoreAction"),
    (("--alpha-matting-erode-size", "-ae"), "alpha_matting_erode_size", 10, None, "N", "int", None,
     "matting: erode the sure regions by N pixels (default 10)", "_StoreAction"),
    (("--post-process-mask", "-ppm"), "post_process_mask", False, 0, None, None, None,
     "clean the mask up (opening, smooth edge)", "_StoreTrueAction"),
    (("--threshold",), "threshold", None, None, "T", "float", None,
     "hard mask: probability ≥ T (0…1) is foreground", "_StoreAction"),
    (("--decontaminate",), "decontaminate", False, 0, None, None, None,
     "estimate the object's colours at soft edges", "_StoreTrueAction"),
    (("--crop",), "crop", False, 0, None, None, None, "crop to the object's bounding box", "_StoreTrueAction"),
    (("--crop-margin",), "crop_margin", 0, None, "N", "int", None, "pixels kept around the box", "_StoreAction"),
    (("--format",), "format", "png", None, None, None, ("png", "webp"), "output format (default png)", "_StoreAction"),
]
# Added with videos (issue 11), after --format.
VIDEO_FLAGS = [
    (("--video-format",), "video_format", None, None, None, None, ("webm", "mov", "mp4", "gif", "webp", "png"),
     get_option("video_format").help, "_StoreAction"),
    (("--temporal",), "temporal", "flow", None, None, None, ("flow", "off"), get_option("temporal").help,
     "_StoreAction"),
]
TABLE_DESTS = [row[1] for row in EXPECTED_REMOVE_FLAGS]
VIDEO_DESTS = [row[1] for row in VIDEO_FLAGS]


def _remove_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["remove"]


def _describe(action: argparse.Action) -> tuple:
    return (tuple(action.option_strings), action.dest, action.default, action.nargs, action.metavar,
            getattr(action.type, "__name__", None) if action.type is not None else None,
            tuple(action.choices) if action.choices is not None else None, action.help, type(action).__name__)


def _cli(*flags: str) -> RefineOptions:
    return refine_options_from_cli(build_parser().parse_args(["remove", "photo.jpg", *flags]))


# --------------------------------------------------------------------------- the CLI is unchanged


def test_remove_flags_are_exactly_the_hand_written_ones():
    actions = _remove_parser()._actions
    assert [_describe(a) for a in actions if a.dest in TABLE_DESTS] == EXPECTED_REMOVE_FLAGS
    assert [_describe(a) for a in actions if a.dest in VIDEO_DESTS] == VIDEO_FLAGS
    # ... and where they were: the refinement block right after -o, --format after --size.
    dests = [a.dest for a in actions]
    start = dests.index("output") + 1
    assert dests[start:start + len(TABLE_DESTS) - 1] == TABLE_DESTS[:-1]
    assert dests[dests.index("format") - 1] == "size"
    assert dests[dests.index("format") + 1:dests.index("format") + 3] == VIDEO_DESTS


def test_table_covers_the_cli_flags_and_http_names():
    assert [o.name for o in OPTIONS if CLI in o.where] == TABLE_DESTS + VIDEO_DESTS
    assert [name for name, _, _ in http_parameters()] == [
        "model", "only_mask", "bgcolor", "edge_refine", "alpha_matting", "alpha_matting_foreground_threshold",
        "alpha_matting_background_threshold", "alpha_matting_erode_size", "post_process_mask", "threshold",
        "decontaminate", "crop", "crop_margin", "format"]
    types = {name: typ for name, typ, _ in http_parameters()}
    assert types["only_mask"] == "boolean" and types["crop_margin"] == "integer"
    assert types["threshold"] == "number" and types["bgcolor"] == types["format"] == "string"
    descriptions = {name: text for name, _, text in http_parameters()}
    assert "Alias: af." in descriptions["alpha_matting_foreground_threshold"]
    assert "0…255" in descriptions["alpha_matting_background_threshold"]
    assert "#RRGGBB" in descriptions["bgcolor"] and "webp" in descriptions["format"]


def test_table_matches_refine_options():
    fields = {f.name: f for f in dataclasses.fields(RefineOptions)}
    for o in OPTIONS:
        if o.field is None:
            continue
        assert o.field in fields, o.name
        if o.type != "path":
            assert o.default == fields[o.field].default, o.name
        if o.range is not None:  # RefineOptions accepts the table's bounds, refuses what lies outside
            lo, hi = o.range
            base = {"fg_threshold": 255, "bg_threshold": 0}
            # bg_threshold < fg_threshold besides: the foreground's lowest and background's highest go
            RefineOptions(**{**base, o.field: lo + (o.field == "fg_threshold")})
            RefineOptions(**{**base, o.field: hi - (o.field == "bg_threshold")})
            step = 1 if o.type == "int" else 0.01
            with pytest.raises(ValueError, match=o.field):
                RefineOptions(**{**base, o.field: lo - step})
            if o.name != "crop_margin":  # unbounded in Python; requests stop at 10000
                with pytest.raises(ValueError, match=o.field):
                    RefineOptions(**{**base, o.field: hi + step})


def test_the_table_imports_nothing_heavy():
    code = ("import sys, u2seg.infer.options; "
            "print(sorted(m for m in ('torch', 'cv2', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- CLI ⇔ HTTP


@pytest.mark.parametrize(("flags", "queries"), [
    ([], [{}]),
    (["-om"], [{"om": "1"}, {"only_mask": "true"}]),
    (["--only-mask", "--crop", "--crop-margin", "12"], [{"om": "yes", "crop": "on", "crop_margin": "12"}]),
    (["-a", "-af", "230", "-ab", "20", "-ae", "5", "-ppm"],
     [{"a": "yes", "af": "230", "ab": "20", "ae": "5", "ppm": "on"},
      {"alpha_matting": "1", "alpha_matting_foreground_threshold": "230",
       "alpha_matting_background_threshold": " 20 ", "alpha_matting_erode_size": "5", "post_process_mask": "True"}]),
    (["--alpha-matting", "--alpha-matting-foreground-threshold", "255", "-ab", "0"],
     [{"a": "t", "af": "255", "ab": "0"}]),
    (["-bgc", "255", "0", "0", "128"], [{"bgc": "255,0,0,128"}, {"bgcolor": "#ff000080"}]),
    (["--bgcolor", "1", "2", "3", "255"], [{"bgcolor": "1, 2, 3"}, {"bgc": "#010203"}]),
    (["--threshold", "0.5", "--decontaminate"], [{"threshold": "0.5", "decontaminate": "1"}]),
])
def test_http_names_and_aliases_parse_like_the_cli(flags, queries):
    expected = _cli(*flags)
    for query in queries:
        refine, fmt, model = parse_http(query)
        assert refine == expected, query
        assert (fmt, model) == ("png", None)


def test_every_alias_is_the_cli_short_flag_and_the_http_alias():
    samples = {"bool": "1", "int": "50", "color": "1,2,3"}
    for o in OPTIONS:
        if o.alias is None:
            continue
        assert f"-{o.alias}" in o.flags and HTTP in o.where and CLI in o.where
        value = samples[o.type]
        assert parse_http({o.alias: value}) == parse_http({o.name: value}), o.name


def test_format_and_model():
    assert parse_http({"format": "WEBP", "model": " u2net "})[1:] == ("webp", "u2net")
    assert parse_http({"format": ".png", "model": " "})[1:] == ("png", None)
    assert build_parser().parse_args(["remove", "x", "--format", "webp"]).format == "webp"


def test_http_empty_values():
    refine, _, _ = parse_http({"threshold": "", "bgcolor": "transparent"})
    assert refine.threshold is None and refine.bgcolor is None
    assert parse_http({"threshold": "null", "bgc": "none"})[0] == RefineOptions()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("query", "message"), [
    ({"treshold": "0.5"}, ("unknown parameter 'treshold'; known: model, only_mask, bgcolor, edge_refine, "
                           "alpha_matting, alpha_matting_foreground_threshold, alpha_matting_background_threshold, "
                           "alpha_matting_erode_size, post_process_mask, threshold, decontaminate, crop, "
                           "crop_margin, format (rembg's aliases om, bgc, a, af, ab, ae, ppm work too)")),
    ({"af": "300"}, "alpha_matting_foreground_threshold must be within 0…255, got 300"),
    ({"ae": "-1"}, "alpha_matting_erode_size must be within 0…1000, got -1"),
    ({"crop_margin": "10001"}, "crop_margin must be within 0…10000, got 10001"),
    ({"crop_margin": "x"}, "crop_margin must be an integer, got 'x'"),
    ({"threshold": "1.5"}, "threshold must be within 0…1, got '1.5'"),
    ({"threshold": "nan"}, "threshold must be within 0…1, got 'nan'"),
    ({"threshold": "abc"}, "threshold must be a number within 0…1, got 'abc'"),
    ({"only_mask": "maybe"}, "only_mask must be a boolean (true/false, 1/0, on/off), got 'maybe'"),
    ({"ppm": ""}, "post_process_mask must be a boolean (true/false, 1/0, on/off), got ''"),
    ({"bgc": "red"}, "bgcolor must be 'R,G,B' or 'R,G,B,A' with integers 0…255, or '#RRGGBB[AA]', got 'red'"),
    ({"bgcolor": "300,0,0"},
     "bgcolor must be 'R,G,B' or 'R,G,B,A' with integers 0…255, or '#RRGGBB[AA]', got '300,0,0'"),
    ({"bgcolor": "#12345"}, "bgcolor must be 'R,G,B' or 'R,G,B,A' with integers 0…255, or '#RRGGBB[AA]', got '#12345'"),
    ({"format": "gif"}, "format must be png or webp, got 'gif'"),
    ({"om": "1", "only_mask": "0"}, "parameter 'only_mask' given twice with different values"),
    ({"ab": "250", "af": "200"},
     "alpha_matting_background_threshold (250) must be lower than alpha_matting_foreground_threshold (200)"),
    ({"only_mask": "1", "bgcolor": "0,0,0"}, "only_mask excludes bgcolor (a mask has no colours)"),
    # the first problem is reported: format, booleans, integers, the thresholds, numbers, colours
    ({"bgc": "red", "threshold": "x", "af": "x", "crop": "x", "format": "gif"}, "format must be png or webp, got 'gif'"),
    ({"bgc": "red", "threshold": "x", "af": "x", "crop": "x"}, "crop must be a boolean (true/false, 1/0, on/off), got 'x'"),
    ({"bgc": "red", "threshold": "x", "ab": "250"},
     "alpha_matting_background_threshold (250) must be lower than alpha_matting_foreground_threshold (240)"),
])
def test_http_errors_name_the_parameter_in_one_line(query, message):
    with pytest.raises(OptionError) as info:
        parse_http(query)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_server_turns_option_errors_into_422():
    from u2seg.apps.server import ApiError, parse_remove_params

    with pytest.raises(ApiError) as info:
        parse_remove_params({"a": "perhaps"})
    assert info.value.status == 422 and info.value.message.startswith("alpha_matting must be a boolean")
    params = parse_remove_params({"om": "1", "format": "webp", "model": "u2netp"})
    assert (params.model, params.format, params.only_mask) == ("u2netp", "webp", True)
    assert params.refine == RefineOptions(only_mask=True)


def test_cli_bad_values_fail_in_refine_options():
    with pytest.raises(ValueError, match="fg_threshold"):
        _cli("-af", "300")
    with pytest.raises(ValueError, match="bgcolor"):
        _cli("-bgc", "1", "2", "3", "999")


def test_cli_bg_image_is_loaded(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 3), (10, 20, 30)).save(tmp_path / "beach.png")
    options = _cli("--bg-image", str(tmp_path / "beach.png"), "--crop")
    assert options.background is not None and options.background.size == (4, 3) and options.crop


# --------------------------------------------------------------------------- the window


def test_gui_controls_are_refine_options_fields():
    fields = {f.name for f in dataclasses.fields(RefineOptions)}
    controls = {c.name: c for c in gui_controls()}
    assert set(controls) == {o.name for o in OPTIONS if GUI in o.where}
    assert set(controls) == {"edge_refine", "alpha_matting", "post_process_mask", "threshold", "decontaminate"}
    for control in controls.values():
        assert control.field in fields and control.label and control.tooltip
        assert control.kind == ("slider" if control.name == "threshold" else "check")
    threshold = controls["threshold"]
    assert (threshold.minimum, threshold.maximum, threshold.start, threshold.scale) == (1, 99, 50, 100)
    assert threshold.value(True, 70) == 0.7 and threshold.value(False, 70) is None and threshold.text(50) == "0.50"
    assert controls["alpha_matting"].value(True) is True
    options = RefineOptions(**{c.field: c.value(True, 25) for c in controls.values()})
    assert options.threshold == 0.25 and options.alpha_matting and options.decontaminate
