"""One artifact, read and verified once: the graph's sha256 recorded at export and checked at every
load, a damaged file refused by name, one parse per `stae export`, and a model that only produces
NaN/Inf stopping `stae run` with one clear error."""
import hashlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from stae_deploy.cli.main import main
from stae_deploy.export.onnx_graph import save_model
from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.onnx_artifact import KEY_GRAPH_SHA256, OnnxArtifact, graph_sha256
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.stae_ref.footage import fetch


def flipped_copy(source, target, offset: int, count: int = 16):
    """``source`` with ``count`` bytes at ``offset`` inverted, written to ``target``."""
    data = bytearray(source.read_bytes())
    data[offset:offset + count] = bytes(b ^ 0xFF for b in data[offset:offset + count])
    target.write_bytes(bytes(data))
    return target


def largest_initializer_offset(path) -> int:
    """A byte offset inside the raw data of the graph's largest initializer."""
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    return path.read_bytes().index(largest.raw_data[:64]) + len(largest.raw_data) // 2


def test_the_recorded_checksum_is_the_graphs_sha256(small_onnx_path):
    path, _ = small_onnx_path
    artifact = OnnxArtifact.open(path)
    parsed = onnx.load(str(path))
    recorded = {p.key: p.value for p in parsed.metadata_props}[KEY_GRAPH_SHA256]
    assert recorded == artifact.graph_sha256 == graph_sha256(path.read_bytes())
    assert recorded == hashlib.sha256(parsed.graph.SerializeToString()).hexdigest()


def test_sixteen_flipped_weight_bytes_are_refused_by_name(small_onnx_path, tmp_path, capsys):
    path, _ = small_onnx_path
    damaged = flipped_copy(path, tmp_path / "damaged.onnx", largest_initializer_offset(path))
    onnx.load(str(damaged))          # still a well-formed protobuf: only the weights changed
    for load in (OnnxArtifact.open, OnnxStepper, Predictor.load):
        with pytest.raises(ArtifactError, match=r"damaged.onnx: the file is damaged: its graph "
                                                r"\(weights and nodes\) has sha256"):
            load(damaged)
    video = fetch("carphone")
    assert main(["run", str(damaged), "--input", str(video), "--max-frames", "3", "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "damaged.onnx: the file is damaged" in error[0]


def test_a_truncated_file_is_refused_by_name(small_onnx_path, tmp_path):
    path, _ = small_onnx_path
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(path.read_bytes()[: 1 << 16])
    with pytest.raises(ArtifactError, match="cut.onnx: it begins like an ONNX model but does not "
                                            "parse .*truncated or corrupt"):
        OnnxArtifact.open(truncated)


@pytest.mark.integration   # exports a model
def test_one_export_parses_the_onnx_file_once(tmp_path, monkeypatch, capsys):
    """torch's raw export is parsed once; the written artifact, its checks and its parity
    rollout reuse the bytes and the graph in memory."""
    parses, reads = [], []
    real_load, real_from_string, real_open = onnx.load, onnx.load_model_from_string, \
        OnnxArtifact.open.__func__
    monkeypatch.setattr(onnx, "load", lambda *a, **k: parses.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(onnx, "load_model_from_string",
                        lambda *a, **k: parses.append("bytes") or real_from_string(*a, **k))
    monkeypatch.setattr(OnnxArtifact, "open", classmethod(
        lambda cls, p: reads.append(p) or real_open(cls, p)))
    output = tmp_path / "m.onnx"
    assert main(["export", "--frame-size", "64", "-o", str(output), "--steps", "2",
                 "--quiet"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert len(parses) == 1 and str(parses[0]).endswith("raw.onnx"), parses
    assert reads == [], "the exported file was read back"


def test_a_model_that_only_produces_nan_stops_the_run(small_onnx_path, tmp_path, capsys):
    path, _ = small_onnx_path
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    nan = np.full(numpy_helper.to_array(largest).shape, np.nan, dtype=np.float32)
    largest.CopyFrom(numpy_helper.from_array(nan, largest.name))
    broken = save_model(model, tmp_path / "nan.onnx").path     # a well-formed file of a broken model
    video = fetch("carphone")
    assert main(["run", str(broken), "--input", str(video), "--max-frames", "20"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(errors) == 1 and "NaN/Inf on 3 steps in a row" in errors[0] \
        and "broken" in errors[0], err
    assert len(warnings) == 1, warnings          # rate-limited: one warning before the stop
