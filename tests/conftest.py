"""Shared pytest options.

``--rtl-seed N``  shift the seed of every RTL (cocotb) test by N, to explore other seeds.
``--rtl-waves``   record waves (FST/VCD) into each RTL run's directory.
"""

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("rtl", "RTL co-simulation tests")
    group.addoption("--rtl-seed", type=int, default=0,
                    help="add N to the seed of every RTL test (default 0)")
    group.addoption("--rtl-waves", action="store_true", default=False,
                    help="record waves for every RTL run")


@pytest.fixture
def rtl_opts(request):
    """Options of the RTL tests: {'seed': offset, 'waves': bool}."""
    return {"seed": request.config.getoption("--rtl-seed"),
            "waves": request.config.getoption("--rtl-waves")}


def _debian_tool(name: str) -> str:
    from cosim.explore.tools import ToolMissing, ensure_tool
    try:
        return ensure_tool(name)
    except ToolMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def valgrind():
    """Valgrind's path, installed by the Makefile when missing (`make valgrind`)."""
    return _debian_tool("valgrind")


@pytest.fixture(scope="session")
def yosys():
    """Debian's yosys, installed by the Makefile when missing (`make yosys`)."""
    return _debian_tool("yosys")
