"""The environment record: `ssmbench env` prints it to paste into a bug report, and every result
stores it; packages and toolkits that are missing read "absent" (faked here either way)."""

import importlib.metadata
import sys
from types import SimpleNamespace

import pytest
import torch

from ssmbench.cli import main
from ssmbench.experiment import measure
from ssmbench.experiment.cell import run_job
from ssmbench.experiment.config import load_config

INSTALLED = {"fla-core": "0.9.1", "triton": "3.1.0", "ssmbench": "0.1.0"}  # mamba, conv: absent


@pytest.fixture
def fake_packages(monkeypatch):
    """Only INSTALLED are installed; CUDA absent, ROCm 6.2."""

    def version(name: str) -> str:
        if name not in INSTALLED:
            raise importlib.metadata.PackageNotFoundError(name)
        return INSTALLED[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)


EXPECTED = {
    "mamba_ssm_version": "absent",
    "causal_conv1d_version": "absent",
    "fla_version": "0.9.1",
    "triton_version": "3.1.0",
    "cuda_version": "absent",
    "rocm_version": "6.2.41133",
}


def test_the_record_names_every_kernel_package_and_toolkit(fake_packages):
    env = measure.environment(torch.device("cpu"))
    assert {key: env[key] for key in EXPECTED} == EXPECTED
    assert env["cpu_model"] and env["cpu_count"] >= 1
    assert (env["gpu_name"], env["gpu_memory_mib"], env["gpu_driver"]) == (None, None, None)


def test_ssmbench_env_prints_the_record_as_a_block(fake_packages, capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "```text" and out[-1] == "```"
    printed = dict(line.split(None, 1) for line in out[1:-1])
    record = measure.environment(torch.device("cpu"))
    assert list(printed) == list(record)
    assert {key: printed[key] for key in EXPECTED} == EXPECTED
    assert printed["gpu_name"] == "none"


def test_every_result_stores_the_record(fake_packages, tmp_path):
    cell = load_config("smoke", overrides={"models": ["lstm"], "lengths": [8]}).cells()[0]
    for kind in ("train", "cost"):
        metrics = run_job(kind, cell, tmp_path).metrics
        assert {key: metrics[key] for key in EXPECTED} == EXPECTED, kind
        assert metrics["torch_version"] == torch.__version__


def fake_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    properties = SimpleNamespace(name="Fake GPU", total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: properties)


def test_the_gpu_is_named_with_its_memory_and_driver_from_nvml(monkeypatch):
    fake_cuda(monkeypatch)
    nvml = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: f"handle {index}",
        nvmlDeviceGetName=lambda handle: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(total=81_559 * 2**20),
        nvmlSystemGetDriverVersion=lambda: "550.54.15",
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    env = measure.environment(torch.device("cuda", 0))
    assert (env["gpu_name"], env["gpu_memory_mib"], env["gpu_driver"]) == (
        "NVIDIA H100 80GB HBM3", 81_559, "550.54.15"
    )  # fmt: skip


def test_without_nvidia_ml_py_the_gpu_comes_from_torch_and_the_driver_is_unknown(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    env = measure.environment(torch.device("cuda", 0))
    assert (env["gpu_name"], env["gpu_memory_mib"], env["gpu_driver"]) == ("Fake GPU", 81_920, None)
