"""One rule for an error inside the daemon's push, pull and load streams (engine/streams.py)."""

from ingestion_factory.engine.streams import stream_error


def test_an_error_event_is_named_by_its_detail_then_its_text():
    assert stream_error({"errorDetail": {"message": "denied: access"}, "error": "denied"}) == "denied: access"
    assert stream_error({"error": "unknown blob"}) == "unknown blob"
    assert stream_error({"errorDetail": "not a dict", "error": ""}) == "the daemon reported an error"


def test_progress_and_anything_else_is_no_error():
    for event in ({"status": "Pushing", "id": "abc"}, {"aux": {"Digest": "sha256:" + "a" * 64}}, "text", None, []):
        assert stream_error(event) is None
