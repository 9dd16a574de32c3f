from __future__ import annotations

import platform

from wvc._malloc import tune_allocator


def test_tune_allocator_applies_on_glibc() -> None:
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is expected
