"""The one artifact cache: every test that needs a compiled model asks `compiled`, so each is built once."""

import pytest

from mnet_compile.pipeline import CompileRequest, compile_model


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """compiled(alpha, resolution, target="x86", **CompileRequest fields) -> artifact folder, built once per session."""
    cache = {}

    def get(alpha, resolution, target="x86", **options):
        key = (alpha, resolution, target, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("artifacts") / f"m_{alpha}_{resolution}_{target}"
            request = CompileRequest(alpha=alpha, resolution=resolution, target=target, output=str(out), **options)
            cache[key] = compile_model(request, log=lambda message: None)
        return cache[key]

    return get
