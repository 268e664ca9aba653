"""The service's own log lines reach its stderr (service.log) at info, with time and level, once each;
libraries keep their levels."""

from __future__ import annotations

import logging

from tunedeck.service.__main__ import log_to_stderr


def test_info_lines_of_tunedeck_reach_stderr_once_and_libraries_stay_quiet(capfd):
    logger = logging.getLogger("tunedeck")
    before, level = list(logger.handlers), logger.level
    try:
        log_to_stderr()
        log_to_stderr()  # a second call adds no second handler
        logging.getLogger("tunedeck.service.datacheck").info("converting SmolLM2 once")
        logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1/ok")
        err = capfd.readouterr().err
        assert err.count("INFO tunedeck.service.datacheck: converting SmolLM2 once") == 1
        assert "HTTP Request" not in err
    finally:
        logger.handlers[:] = before
        logger.setLevel(level)
