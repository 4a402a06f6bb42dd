"""A dead or unreachable Ray address fails `run --ray` in one line (exit 2), never hangs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import anyio
import pytest

from llamabatch import SimServer
from tests.helpers import FAST, prompt_rows, write_jsonl

pytest.importorskip("ray")
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]
# The command line, with a shorter bound on joining a cluster (the default is 60 s).
CLI = (
    "import sys; from llamabatch.runs import rayjoin; rayjoin.JOIN_S = 3; "
    "from llamabatch.cli import main; sys.exit(main(sys.argv[1:]))"
)


def write_config(tmp_path: Path, base_url: str) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(10))
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
        f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\nbase_url = "{base_url}"\n'
    )
    return config


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


async def cli(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with anyio.fail_after(120):  # a hang fails the test rather than the suite
        done = await anyio.run_process(
            [sys.executable, "-c", CLI, *args], env={**base, **env}, check=False
        )
    return done.returncode, done.stderr.decode(errors="replace")


@pytest.mark.parametrize("given", ["--ray-address", "RAY_ADDRESS"])
async def test_a_closed_ray_address_fails_in_one_line_before_anything_is_sent(
    tmp_path: Path, given: str
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    async with SimServer(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url)
        args = ["run", str(config), "-q", "--ray"]
        if given == "--ray-address":
            code, err = await cli([*args, "--ray-address", address], {})
        else:
            code, err = await cli(args, {"RAY_ADDRESS": address})
        assert sim.stats.requests == 0
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{given} {address}: no Ray cluster reachable there" in lines[0], err
    assert not (tmp_path / "out").exists()  # refused before the output was made


@pytest.mark.parametrize("given", ["--ray-address", "RAY_ADDRESS"])
async def test_an_address_where_no_ray_cluster_answers_fails_in_bounded_time(
    tmp_path: Path, given: str
) -> None:
    # A port that takes connections and never answers: Ray's driver would retry for ever.
    # Via RAY_ADDRESS the driver joins too (it once asked Ray for a local cluster's
    # _system_config, which Ray refuses from a driver joining a cluster).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        async with SimServer(default=FAST) as sim:
            config = write_config(tmp_path, sim.base_url)
            args = ["run", str(config), "-q", "--ray"]
            if given == "--ray-address":
                code, err = await cli([*args, "--ray-address", address], {})
            else:
                code, err = await cli(args, {"RAY_ADDRESS": address})
            assert sim.stats.requests == 0
    assert code == 2, err
    assert f"{given} {address}: the Ray cluster there did not let this driver join" in err
    assert "Traceback" not in err and "SIGTERM handler" not in err, err


class OneCluster:
    """What `_one_machine` asks of Ray: this driver's node and the cluster's live nodes."""

    def __init__(self, here: str, nodes: list[str]) -> None:
        self.here, self.node_ids = here, nodes

    def get_runtime_context(self) -> OneCluster:
        return self

    def get_node_id(self) -> str:
        return self.here

    def nodes(self) -> list[dict[str, object]]:
        return [{"NodeID": n, "Alive": True} for n in self.node_ids] + [
            {"NodeID": "gone", "Alive": False}
        ]


def test_a_response_cache_is_refused_on_a_cluster_of_several_machines(tmp_path: Path) -> None:
    from llamabatch.errors import UsageError
    from llamabatch.runs.raypool import _one_machine

    cache = tmp_path / "c.sqlite3"
    assert _one_machine(OneCluster("a", ["a"]), cache, None) == "a"  # actors are pinned there
    with pytest.raises(
        UsageError, match=r"needs a Ray cluster of this machine alone \(this one has 2 nodes\)"
    ):
        _one_machine(OneCluster("a", ["a", "b"]), cache, None)
    with pytest.raises(UsageError, match="joined as a Ray client"):
        _one_machine(OneCluster("a", ["a"]), cache, "ray://head:10001")
