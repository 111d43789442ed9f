"""The shared vocabulary: partition ids, weekly windows, observations."""

from datetime import date, datetime, timezone

import numpy as np
import pytest

from clay_core.types import Observations, PartitionId, weekly_windows, window_start


def test_partition_id_key_round_trip_and_bounds():
    pid = PartitionId(window="2024-01-08", tile="31UFU")
    assert pid.key == "2024-01-08|31UFU" == str(pid)
    assert PartitionId.parse(pid.key) == pid
    start, end = pid.bounds()
    assert start == datetime(2024, 1, 8, tzinfo=timezone.utc)
    assert end == datetime(2024, 1, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize("bad", ["31UFU", "2024-01-08|", "not-a-date|31UFU", ""])
def test_partition_id_parse_refuses_malformed_keys(bad):
    with pytest.raises(ValueError):
        PartitionId.parse(bad)


def test_window_start_is_the_monday_in_utc():
    assert window_start(date(2024, 1, 7)) == "2024-01-01"  # a Sunday
    assert window_start(date(2024, 1, 8)) == "2024-01-08"  # a Monday
    # 23:30 on Sunday in UTC-2 is already Monday in UTC
    from datetime import timedelta
    late = datetime(2024, 1, 7, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert window_start(late) == "2024-01-08"
    assert weekly_windows("2024-01-03", 3) == ["2024-01-01", "2024-01-08", "2024-01-15"]


def test_observations_concat_keeps_rows_aligned():
    a = Observations(np.array(["x"], dtype=object), np.array(["2024-01-01"], dtype="datetime64[ns]"), np.ones((1, 4), np.float32))
    b = Observations(np.array(["y", "z"], dtype=object), np.array(["2024-01-08", "2024-01-09"], dtype="datetime64[ns]"),
                     np.zeros((2, 4), np.float32))
    c = Observations.concat([a, b], 4)
    assert c.chip_id.tolist() == ["x", "y", "z"] and c.vectors.shape == (3, 4) and c.vectors[0].sum() == 4
    empty = Observations.concat([], 4)
    assert empty.vectors.shape == (0, 4) and len(empty.chip_id) == 0
