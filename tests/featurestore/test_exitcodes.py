"""Exit codes: distinct, clear of click's and the shell's, and chosen for the right errors."""

from __future__ import annotations

import signal

from featurestore import exitcodes
from featurestore.errors import ConfigError, FeaturestoreError, JobInterrupted
from featurestore.lock import LockedError
from featurestore.sources import SourceError
from tests.conftest import REPO_ROOT


def test_codes_are_distinct_and_clear_of_the_shells() -> None:
    codes = exitcodes.CODES
    assert len(set(codes.values())) == len(codes)
    assert codes["USAGE"] == 2  # click's own
    own = {name: code for name, code in codes.items() if not name.startswith(("INTERRUPTED", "OK", "USAGE"))}
    assert all(1 <= code < 126 for code in own.values())  # 126+ are the shell's
    assert exitcodes.INTERRUPTED_SIGINT == 130 and exitcodes.INTERRUPTED_SIGTERM == 143


def test_every_code_is_documented() -> None:
    doc = (REPO_ROOT / "docs" / "exit-codes.md").read_text()
    for name, code in exitcodes.CODES.items():
        assert f"| {code} | `{name}`" in doc


def test_errors_map_to_their_codes() -> None:
    assert exitcodes.exit_code_for(LockedError("s: busy")) == exitcodes.REFUSED
    assert exitcodes.exit_code_for(SourceError("s: does not exist")) == exitcodes.BAD_INPUT
    assert exitcodes.exit_code_for(ConfigError("--splits: bad")) == exitcodes.BAD_INPUT
    assert exitcodes.exit_code_for(JobInterrupted(signal.SIGTERM)) == 143
    assert exitcodes.exit_code_for(KeyboardInterrupt()) == 130
    assert exitcodes.exit_code_for(FeaturestoreError("s: damaged")) == exitcodes.ERROR
    assert exitcodes.exit_code_for(RuntimeError("bug")) == exitcodes.ERROR

    class SettingsError(FeaturestoreError):
        exit_code = exitcodes.REFUSED

    assert exitcodes.exit_code_for(SettingsError("s: other settings")) == exitcodes.REFUSED


def test_a_finished_job_reports_drift_before_failed_images() -> None:
    assert exitcodes.exit_code_for_result(failed_images=3) == exitcodes.OK
    assert exitcodes.exit_code_for_result(failed_images=3, strict=True) == exitcodes.FAILED_IMAGES
    assert exitcodes.exit_code_for_result(failed_images=3, strict=True, drifted=True) == exitcodes.DRIFT
