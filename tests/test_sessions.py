"""The one Predictor cache that remove(), the CLI, the server and the window share."""

from __future__ import annotations

import threading

from u2seg.infer.sessions import MAX_PREDICTORS, clear_predictors, get_predictor


def test_one_predictor_per_settings_even_under_concurrency(use_pretrained_home):
    clear_predictors()
    got = []
    threads = [threading.Thread(target=lambda: got.append(get_predictor("u2netp", size=256))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in got}) == 1 and got[0].preprocessing.size == (256, 256)
    assert get_predictor("u2netp", size=256) is got[0]
    assert get_predictor("u2netp", size=288) is not got[0]  # other settings, another Predictor


def test_offline_takes_cached_registry_weights_and_old_entries_are_dropped(use_pretrained_home):
    clear_predictors()
    first = get_predictor("u2netp", offline=True)
    assert first.model_name == "u2netp"
    for size in range(200, 200 + MAX_PREDICTORS):
        get_predictor("u2netp", size=size)
    assert get_predictor("u2netp", offline=True) is not first  # least recently used, dropped
    clear_predictors()
