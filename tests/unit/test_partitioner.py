import pytest

from foldline import murmur2, partition_for


@pytest.mark.parametrize(
    ("key", "expected"),
    # The vectors of Apache Kafka's own UtilsTest.testMurmur2.
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_matches_kafka(key, expected):
    assert murmur2(key.encode()) == expected


def test_partition_is_positive_modulo():
    for key in ("a", "inv-1", "ü", ""):
        assert 0 <= partition_for(key, 7) < 7
