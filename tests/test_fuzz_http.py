"""Property-based fuzzing of the service's request handling (hypothesis): any parameters, headers
and bodies end in a valid image or one clear JSON error line, never a 500 or a traceback."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402

from u2seg.apps.server import ApiError, create_app, parse_remove_params  # noqa: E402
from u2seg.infer.options import http_parameters  # noqa: E402

NAMES = [name for name, _, _ in http_parameters()] + ["om", "a", "af", "ab", "ae", "ppm", "bgc", "url"]
ALLOWED = {200, 400, 401, 403, 408, 413, 415, 422, 429, 502, 504}

# Values near the valid ones (numbers, booleans, colours, choices) and anything at all.
values = st.one_of(
    st.sampled_from(["true", "false", "1", "0", "yes", "png", "webp", "jpeg", "u2netp", "255,0,0", "#ff0000",
                     "0.5", "-1", "1e309", "nan", "inf", "", " ", "99999999999999999999", "0x10", "1,2,3,4"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=40),
)
params = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), values, max_size=6)
# Mostly known names with near-valid values, so that many requests get past parsing.
few_params = st.dictionaries(st.sampled_from(NAMES), values, max_size=2)


def _option_names_ok(detail: str) -> bool:
    return isinstance(detail, str) and "\n" not in detail and 0 < len(detail) < 2000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params)
def test_parameter_parsing_gives_options_or_one_422(values):
    try:
        parsed = parse_remove_params(values)
    except ApiError as exc:
        assert exc.status == 422 and _option_names_ok(exc.message)
    else:
        assert parsed.format in ("png", "webp")


@pytest.fixture(scope="module")
def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(pretrained_home, predictor):
    # models= names the offered model, so the answers do not depend on what the user's cache holds
    app = create_app(predictor_factory=lambda name: predictor, max_workers=1, models=["u2netp"],
                     default_model="u2netp")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


header_values = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
                          st.sampled_from(["image/png", "image/*", "multipart/form-data", "multipart/form-data; boundary=",
                                           "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                                           "application/octet-stream", "-1", "0", "999999999999"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(query=st.one_of(few_params, params), content_type=st.one_of(st.just("image/png"), st.just("image/png"), header_values), length=st.one_of(st.none(), header_values),
       request_id=st.one_of(st.none(), header_values),
       body=st.one_of(st.just(b"PNG"), st.binary(max_size=200)), keep_image=st.sampled_from([True, True, False]))
def test_any_request_ends_in_an_image_or_one_json_error(client, tiny_png, query, content_type, length, request_id,
                                                        body, keep_image):
    data = tiny_png if keep_image else body
    headers = {"Content-Type": content_type}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    if length is not None:
        headers["Content-Length"] = length if not length.isdigit() else str(len(data))
    query = {k: v for k, v in query.items() if k != "url"}  # urls are fuzzed by test_url_input's origins
    try:
        response = client.post("/api/remove", params=query, content=data, headers=headers)
    except Exception as exc:  # noqa: BLE001 - the client refusing to send an invalid header is fine
        assert type(exc).__name__ in ("LocalProtocolError", "InvalidHeader", "UnicodeEncodeError", "ValueError"), exc
        return
    hypothesis.event(f"status {response.status_code}")
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    assert "x-request-id" in response.headers
    if response.status_code == 200:
        Image.open(io.BytesIO(response.content)).load()
    else:
        assert response.headers["content-type"] == "application/json"
        assert _option_names_ok(response.json()["detail"])
