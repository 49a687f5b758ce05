"""`mnet-compile profile`: every kernel the VM calls, with its time, FLOPs and schedule source."""

from __future__ import annotations

import json
import subprocess

import tvm

from mnet_compile.bench import FMA_PEAK_C, cpu_description, fma_peak_gflops
from mnet_compile.profile import profile
from mnet_compile.schedule.records import family_for

from .helpers import run_cli


def test_cli_names_the_family_and_profile_shows_every_kernel(capsys, tmp_path):
    out = tmp_path / "a"
    code, _, log = run_cli(capsys, "--alpha", "0.25", "--resolution", "128", "--no-tuned", "--output", out)
    assert code == 0
    assert "--no-tuned: default schedules" in log and "tuned records applied to 0 of" in log
    manifest = json.loads((out / "manifest.json").read_text())
    schedules = manifest["schedules"]
    host = tvm.target.Target(manifest["target"]["tvm"])
    assert schedules["family"] == family_for(host) and schedules["tuned"] == 0
    assert set(schedules["per_kernel"]) and all(k["schedule"] == "default" for k in schedules["per_kernel"].values())
    code, text, _ = run_cli(capsys, "profile", out, "--runs", "3")
    assert code == 0
    rows = [line.split() for line in text.splitlines()[3:]]
    names = {r[0] for r in rows}
    # every kernel the VM calls (pure reshapes become views, not calls) with its schedule's source
    assert names <= set(schedules["per_kernel"]) and len(names) >= len(schedules["per_kernel"]) - 2
    assert all(r[-1] == "default" for r in rows)
    conv = [r for r in profile(str(out), runs=2, threads=1) if r["kernel"].startswith("fused_conv2d")]
    assert conv and all(r["gflops"] > 0 and r["calls"] >= 1 for r in conv)  # FLOPs from the manifest
    assert run_cli(capsys, "profile", tmp_path / "missing")[0] == 1


def test_fma_peak_uses_the_widest_vectors():
    assert "__AVX512F__" in FMA_PEAK_C and "_mm512_fmadd_ps" in FMA_PEAK_C
    assert "logical CPUs" in cpu_description()
    with open("/proc/cpuinfo") as f:
        flags = f.read().split("\n\n")[0].split()
    assert all(flag in cpu_description().split() for flag in ("avx512_vnni", "amx_int8") if flag in flags)  # the int8 ISA named
    peak = fma_peak_gflops(1)  # measured: gcc builds the probe with -march=native
    assert peak is not None and peak > 1


def test_fma_peak_probe_runs_every_chain_it_counts(tmp_path):
    """The probe's FLOP count assumes CHAINS distinct FMA chains; the compiled loop must hold that many FMAs
    (chains that start equal, gcc computes once: such a probe counted 5x the FMAs it ran, 1.34x the peak)."""
    src, asm = tmp_path / "fma_peak.c", tmp_path / "fma_peak.s"
    src.write_text(FMA_PEAK_C)
    for flags in (["-march=native"], ["-mavx2", "-mfma"]):
        subprocess.run(["gcc", "-O3", *flags, "-fopenmp", "-S", str(src), "-o", str(asm)], check=True)
        fmas = [line.split()[-1] for line in asm.read_text().splitlines() if line.strip().startswith("vfmadd")]
        assert len(set(fmas)) >= 12, fmas  # one accumulator register per chain
