"""--pack auto: packs grow while the whole pack's throughput rises, within device memory."""

import pytest

from agent.sweep.pack_size import PackSizer, parse_pack


def test_a_fixed_pack_size_is_used_as_given():
    sizer = PackSizer(fixed=8)
    sizer.observe("k", 8, 100.0)
    assert sizer.next_size("k") == 8 and sizer.next_size("other") == 8


@pytest.mark.parametrize("start", [1, 2, 4])
@pytest.mark.parametrize("curve,settles", [
    ({1: 60, 2: 100, 4: 190, 8: 360, 16: 700, 32: 720}, 16),  # saturates: 32 adds < 10%
    ({1: 100, 2: 102, 4: 105, 8: 108}, 1),  # packing barely helps: a run alone
    ({1: 100, 2: 72, 4: 70}, 1),  # a pack is slower than a run alone (CPU, tiny maps)
    ({1: 40, 2: 100, 4: 300, 8: 250, 16: 200}, 4),  # slower when larger: back to the best
])
def test_auto_doubles_while_throughput_rises_then_settles_on_the_best(curve, settles, start):
    sizer = PackSizer(fixed=None, start=start)
    seen = []
    for _ in range(10):
        size = sizer.next_size("cnn")
        seen.append(size)
        if size not in curve:
            break
        sizer.observe("cnn", size, curve[size])
    assert seen[-1] == settles
    tried = list(dict.fromkeys(seen))
    assert tried[0] == 1 and (len(tried) == 1 or tried[1] == max(start, 2))  # baseline first
    assert all(b == 2 * a for a, b in zip(tried[1:], tried[2:]))  # then explored by doubling
    assert seen[-3:] == [settles] * 3  # and stays settled


def test_auto_never_grows_past_the_device_memory():
    sizer = PackSizer(fixed=None, start=4)
    sizer.memory_mb = 1000.0
    sizer.observe("big", 1, 30.0, peak_memory_mb=100.0)
    assert sizer.next_size("big") == 4
    sizer.observe("big", 4, 100.0, peak_memory_mb=400.0)  # 100 MB a member: at most 8
    assert sizer.next_size("big") == 8
    sizer.observe("big", 8, 200.0, peak_memory_mb=800.0)
    assert sizer.next_size("big") == 8  # 16 members would need 1600 MB


def test_kinds_of_pack_are_sized_apart():
    sizer = PackSizer(fixed=None, start=2)
    sizer.observe("dense", 1, 50.0)
    assert sizer.next_size("dense") == 2 and sizer.next_size("cnn") == 1
    sizer.observe("dense", 2, 100.0)
    assert sizer.next_size("dense") == 4 and sizer.next_size("cnn") == 1


@pytest.mark.parametrize("text,value", [("auto", None), ("1", 1), ("16", 16)])
def test_pack_option_values(text, value):
    assert parse_pack(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "many", "", "257", "1e3"])
def test_bad_pack_option_values_are_refused(text):
    with pytest.raises(ValueError, match="--pack"):
        parse_pack(text)


def test_auto_says_what_it_settled_on_and_why():
    sizer = PackSizer(fixed=None, start=2)
    for size, rate in ((1, 3100.0), (2, 5800.0), (4, 5900.0)):
        assert sizer.settled_text("cnn") is None
        assert sizer.next_size("cnn") == size
        sizer.observe("cnn", size, rate)
    assert sizer.next_size("cnn") == 2
    assert sizer.settled_text("cnn") == "packs of 2 (images/s: 1 -> 3,100, 2 -> 5,800, " \
                                        "4 -> 5,900)"
    assert PackSizer(fixed=4).settled_text("cnn") is None
