"""The committed protobuf module is what protoc makes of the committed schema."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

NORTH = Path(__file__).resolve().parents[4] / "node" / "north"


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (protoc) not installed"
)
def test_generated_module_matches_the_schema(tmp_path: Path) -> None:
    """Regenerating sparkplug_b_pb2.py/.pyi from sparkplug_b.proto gives the committed files."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{NORTH}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(NORTH / "sparkplug_b.proto"),
        ],
        check=True,
    )
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_text() == (NORTH / name).read_text(), name


def test_field_numbers_follow_the_specification() -> None:
    """The numbers that travel on the wire are the specification's (a few spot checks)."""
    from node.north import sparkplug_b_pb2 as pb

    metric = pb.Payload.Metric.DESCRIPTOR.fields_by_name
    assert {n: metric[n].number for n in ("name", "alias", "timestamp", "datatype")} == {
        "name": 1,
        "alias": 2,
        "timestamp": 3,
        "datatype": 4,
    }
    assert metric["is_null"].number == 7 and metric["string_value"].number == 15
    assert metric["template_value"].number == 18
    payload = pb.Payload.DESCRIPTOR.fields_by_name
    assert [payload[n].number for n in ("timestamp", "metrics", "seq", "uuid", "body")] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert pb.DataType.Value("DateTime") == 13 and pb.DataType.Value("DateTimeArray") == 34
