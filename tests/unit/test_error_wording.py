"""How an exception's message is shortened for an error message (mindserve._errors.describe)."""

from mindserve._errors import describe


def test_the_meaningful_line_skips_frames_and_headings():
    framed = RuntimeError(
        "\n----------------------------------------------------\n- Memory not enough:\n"
        "----------------------------------------------------\nMemory isn't enough and alloc failed, "
        "kernel name: Tile-op0.\n\n----------------------------------------------------\n"
        "- C++ Call Stack: (For framework developers)\n---------\ngraph_scheduler.cc:1168 Run\n"
    )
    assert describe(framed, first_line=True) == (
        "RuntimeError: Memory isn't enough and alloc failed, kernel name: Tile-op0."
    )
    assert describe(RuntimeError("----\n- Heading only:\n----\n"), first_line=True) == (
        "RuntimeError: - Heading only:"
    )
