"""`cloud init` raises the kernel limits containers need (on files standing in for /proc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratuslab.cloud import site
from stratuslab.errors import BackendUnavailable


def test_host_limits_are_raised_where_lower_and_never_lowered(tmp_path: Path) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    low.write_text("128\n")
    high.write_text("4096\n")
    limits = {str(low): 1024, str(high): 1024}
    assert site.ensure_host_limits(limits) == "raised"
    assert (low.read_text(), high.read_text()) == ("1024\n", "4096\n")
    assert site.ensure_host_limits(limits) == "present"


def test_a_limit_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot raise .*absent to 1024"):
        site.ensure_host_limits({str(tmp_path / "absent"): 1024})
