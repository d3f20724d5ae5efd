import io
import json
import logging

from kokpit.runtime.log import configure, get_logger


def test_json_lines_carry_bound_fields() -> None:
    stream = io.StringIO()
    configure(logging.INFO, json=True, stream=stream)
    try:
        log = get_logger("kokpit.test", controller="machines").with_fields(key="ns/m-1")
        log.info("reconciled", extra={"reconcile_id": 7})
        entry = json.loads(stream.getvalue().strip())
        assert entry["msg"] == "reconciled"
        assert entry["level"] == "info"
        assert (entry["controller"], entry["key"], entry["reconcile_id"]) == (
            "machines",
            "ns/m-1",
            7,
        )
    finally:
        logging.getLogger().handlers.clear()
