"""Properties of the built `chaperone` binary that docs/operations.md promises."""
from __future__ import annotations

import platform
import shutil
import subprocess

import pytest


@pytest.mark.skipif(platform.system() != "Linux", reason="ELF/glibc only")
def test_binary_uses_packed_relative_relocations(chaperone_bin):
    # crates/cli/build.rs links with -z pack-relative-relocs (DT_RELR): the loader reads a
    # small RELR table instead of a ~1.2 MB .rela.dyn that would stay resident.
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not installed")
    out = subprocess.run([readelf, "-d", str(chaperone_bin)], capture_output=True,
                         text=True, check=True).stdout
    tags = {line.split()[1] for line in out.splitlines() if line.strip().startswith("0x")}
    assert "(RELR)" in tags, out
    relasz = [int(line.split()[-2]) for line in out.splitlines() if "(RELASZ)" in line]
    assert relasz and relasz[0] < 64 * 1024, f"relative relocations not packed: {relasz}"
    # And it starts (the glibc here supports DT_RELR).
    v = subprocess.run([str(chaperone_bin), "--version"], capture_output=True, text=True,
                       check=True)
    assert v.stdout.startswith("chaperone "), v.stdout
