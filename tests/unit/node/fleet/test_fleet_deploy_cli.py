"""``lineside fleet deploy | promote`` on bad input, and ``lineside fleet`` as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.signing import generate_keypair
from node.__main__ import _parser, main
from node.fleet.cli import run_cli
from node.fleet.deploy import run_deploy, run_promote

DEMO = Path(__file__).resolve().parents[4] / "models" / "demo"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_fleet_without_a_subcommand_still_follows_the_fleet() -> None:
    """``lineside fleet --broker ... --json --for S`` parses as before, to the follower;
    ``deploy`` and ``promote`` reach their own commands."""
    args = _parser().parse_args(["fleet", "--broker", "h:1884", "--json", "--for", "2"])
    assert args.func is run_cli and args.broker == "h:1884" and args.json and args.for_s == 2
    args = _parser().parse_args(["fleet", "deploy", "pkg", "--nodes", "g/e", "--key", "k"])
    assert args.func is run_deploy and args.package == Path("pkg")
    argv = ["fleet", "promote", "--nodes", "g/e", "--key", "k", "--user", "u", "--reason", "r"]
    assert _parser().parse_args(argv).func is run_promote


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--nodes", "station-1"], "--nodes: 'station-1' is not GROUP/EDGE_NODE"),
        (["--nodes", "g/e+"], "--nodes: 'g/e+' is not GROUP/EDGE_NODE"),
        (["--key", "{missing}"], "--key: "),
        (["--key", "{public}"], "--key: "),
        (["--broker", "h:99999"], "--broker: "),
        (["--ttl", "100000"], "--ttl: at most a day"),
        (["--package-path", "relative/pkg"], "--package-path: relative/pkg is not an absolute"),
    ],
)
def test_bad_deploy_input_is_one_line_naming_the_argument(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad argument: exit 2, one line on stderr that names it, no traceback."""
    key, public = generate_keypair(tmp_path / "fleet")
    base = {"--nodes": "g/e", "--key": str(key), "--broker": "127.0.0.1:1"}
    given = dict(zip(argv[::2], argv[1::2], strict=True))
    given = {k: v.format(missing=tmp_path / "nope.key", public=public) for k, v in given.items()}
    flat = [x for k, v in {**base, **given}.items() for x in (k, v)]
    code, out, err = _run(["fleet", "deploy", str(DEMO), *flat], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"lineside: {named}")


def test_a_folder_that_is_no_package_and_bad_promotions_are_refused_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deploy of a folder that is not a model package, a promotion with an empty reason or
    a malformed digest: exit 2, one line naming PACKAGE, --reason or --sha256."""
    key, _ = generate_keypair(tmp_path / "fleet")
    common = ["--nodes", "g/e", "--key", str(key), "--broker", "127.0.0.1:1"]
    code, _, err = _run(["fleet", "deploy", str(tmp_path), *common], capsys)
    assert code == 2 and err.startswith(f"lineside: PACKAGE: {tmp_path}")
    promote = ["fleet", "promote", *common, "--user", "anna"]
    code, _, err = _run([*promote, "--reason", " "], capsys)
    assert code == 2 and "--reason" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run([*promote, "--reason", "r", "--sha256", "abc"], capsys)
    assert code == 2 and err.startswith("lineside: --sha256: ")


def test_an_unreachable_broker_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Good input but no broker at the address: one line naming --broker, exit 1."""
    key, _ = generate_keypair(tmp_path / "fleet")
    argv = ["fleet", "deploy", str(DEMO), "--nodes", "g/e", "--key", str(key)]
    code, out, err = _run([*argv, "--broker", "127.0.0.1:1", "--timeout", "2"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("lineside: --broker 127.0.0.1:1: cannot connect")
    assert len(err.strip().splitlines()) == 1
